"""The close codes collab sends, one place for all of them (docs/protocol.md lists each with
what the client should do). 44xx mirror the HTTP status of the same meaning; autobahn refuses
1008, so policy closes use these instead."""

CLOSE_MALFORMED = 4400  # not y-websocket, an update that does not apply, too many client ids
CLOSE_UNAUTHENTICATED = 4401  # no session, or a bad ticket
CLOSE_FORBIDDEN = 4403  # no access (or no longer), or a foreign origin
CLOSE_NOT_FOUND = 4404  # a WebSocket path that is not a document
CLOSE_SLOW_READER = 4408  # more than WS_MAX_SEND_BUFFER queued for a socket that does not read
CLOSE_TOO_LARGE = 4413  # a frame over WS_MAX_INCOMING_FRAME, or an awareness state too large
CLOSE_RATE_LIMITED = 4429  # more messages or bytes per second than WS_RATE_* allow
CLOSE_INTERNAL = 1011  # the server failed; the client may retry
CLOSE_TRY_AGAIN_LATER = 1013  # a connection cap (WS_MAX_CONNECTIONS, ..._PER_USER) is reached
