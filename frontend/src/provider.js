// A y-websocket client for collab's /ws/documents/<uuid>: the standard protocol (y-protocols sync,
// awareness and auth messages; docs/protocol.md), with what the stock WebsocketProvider lacks:
//
// - reconnects with *full-jitter* exponential backoff (base 500 ms, cap 30 s), so that after a
//   server restart thousands of clients spread their returns over the window instead of all
//   coming back in the same second (the stock provider backs off without jitter);
// - tells the page what it is doing: "connecting", "connected", "reconnecting" (with the time of
//   the next attempt, for "reconnecting in 3 s"), "offline" (navigator.onLine), "denied" when
//   the server refuses with 4401/4403/4404, and "too-large" when a change is larger than the
//   server takes (4413, or our own check before sending), after which it stops retrying;
// - waits at least 5 s (plus the backoff) after a "try again later" (1013: the server is full)
//   or a rate-limit close (4429), and says why;
// - goes offline at once when the browser says so, and back when it returns;
// - follows the role the server gives this socket (auth "authenticated" messages, scope
//   "readonly" or "read-write"), on connect and whenever it changes on an open socket, and
//   keeps the server's last state vector, from which the page tells what was not saved;
// - never sends a message larger than the server's frame limit (maxMessageBytes).
//
// Handshake (y-protocols/sync.js): on open we send our sync step 1 and our awareness state; we
// answer the server's step 1 with a step 2, which carries whatever was typed while offline.
// While the socket is read-only we answer nothing and send no updates (the server would drop
// them); when it becomes read-write, the step 2 goes out, with everything typed meanwhile.
// Updates that came from the socket are applied with this provider as origin and never sent
// back. The server echoes awareness, so on a quiet document we still hear from it at least every
// 15 s (our own renewals); hearing nothing for 30 s means the socket is dead and we reconnect.

import * as decoding from 'lib0/decoding'
import * as encoding from 'lib0/encoding'
import { ObservableV2 } from 'lib0/observable'
import * as awarenessProtocol from 'y-protocols/awareness'
import * as syncProtocol from 'y-protocols/sync'
import * as Y from 'yjs'

const MESSAGE_SYNC = 0
const MESSAGE_AWARENESS = 1
const MESSAGE_AUTH = 2
const MESSAGE_QUERY_AWARENESS = 3
// Hocuspocus' "stateless": a string for the application, outside the document; collab's server
// sends JSON such as {"type": "title", "title": "…"} when the document is renamed.
const MESSAGE_STATELESS = 5
// Auth sub-types: y-protocols defines 0 (permission denied); 2 is Hocuspocus' "authenticated",
// with a scope string, which the stock y-websocket client ignores (docs/protocol.md).
const AUTH_PERMISSION_DENIED = 0
const AUTH_AUTHENTICATED = 2
export const SCOPE_READ_ONLY = 'readonly'
export const SCOPE_READ_WRITE = 'read-write'

export const BACKOFF_BASE_MS = 500
export const BACKOFF_CAP_MS = 30000
// Twice the awareness renewal period (15 s), as in the stock client.
const SILENCE_TIMEOUT_MS = 30000

// Close codes after which retrying cannot help (docs/protocol.md).
const FINAL_CLOSE_CODES = new Set([4401, 4403, 4404])
// A change larger than the server takes: sending it again would be refused again.
export const CLOSE_TOO_LARGE = 4413
// The server is full (1013 "try again later": a connection cap) or this socket sent more than
// the rate limits allow (4429): retrying is right, but not at once.
export const SLOW_DOWN_CLOSE_CODES = new Set([1013, 4429])
export const SLOW_DOWN_MIN_MS = 5000

const MB = 1024 * 1024

/** The sentence the server sends with 4413, made here when our own check stops a message. */
export function tooLargeMessage (bytes, limit) {
  const mb = (n) => (n / MB).toFixed(1)
  return `this change is too large to save (${mb(bytes)} MB; the limit is ${mb(limit)} MB)`
}

/**
 * Full jitter ("Exponential Backoff And Jitter", AWS Architecture Blog, 2015): a uniform delay
 * in [0, min(cap, base * 2^attempt)). Spreads a crowd of clients evenly over the window.
 */
export function backoffDelay (attempt, base = BACKOFF_BASE_MS, cap = BACKOFF_CAP_MS, random = Math.random) {
  const ceiling = Math.min(cap, base * 2 ** Math.min(attempt, 30))
  return Math.floor(random() * ceiling)
}

/**
 * Events: "status" ({status, retryAt, code, reason}), "synced" (bool), "permission-denied"
 * (reason: string), "scope" ({readOnly, stateVectorCurrent}) when the server changes what this
 * socket may do, "server-state" (the state vector of each server sync step 1, a Map),
 * "stateless" (a string the server sent for the page: a new title).
 *
 * Options: `readOnly`, what the page was rendered with, until the server says otherwise;
 * `maxMessageBytes`, the server's frame limit (0: unknown, no check).
 */
export class CollabProvider extends ObservableV2 {
  constructor (url, doc, { awareness = new awarenessProtocol.Awareness(doc), connect = true, readOnly = false, maxMessageBytes = 0 } = {}) {
    super()
    this.url = url
    this.doc = doc
    this.awareness = awareness
    this.ws = null
    this.synced = false
    this.readOnly = readOnly
    this.maxMessageBytes = maxMessageBytes
    // The state vector of the server's last sync step 1 (what it had then), or null.
    this.serverStateVector = null
    // That step 1, encoded, while we have not answered it (read-only).
    this._unanswered = null
    // Whether this socket has told us its scope yet (the first comes after its step 1).
    this._scopeHeard = false
    // The largest document message sent on this socket, and what it carried: if the server
    // refuses one as too large (4413), it is that one.
    this._largestSent = null
    // After a change too large to save: a state vector of what the server has (the refused
    // change and everything after it are not in it), for the page to list what was not saved.
    this.unsavedBasis = null
    this.status = { status: 'connecting', retryAt: null, code: null, reason: '' }
    this.attempt = 0
    this.shouldConnect = false
    this.lastMessageAt = 0
    this._retryTimer = null

    this._onDocUpdate = (update, origin) => {
      if (origin === this || this.readOnly) return
      const encoder = encoding.createEncoder()
      encoding.writeVarUint(encoder, MESSAGE_SYNC)
      syncProtocol.writeUpdate(encoder, update)
      this._send(encoder, { update })
    }
    this._onAwarenessUpdate = ({ added, updated, removed }, origin) => {
      if (origin === this) return
      // We speak only for our own client: the server refuses to let one connection speak for
      // another, and relays remote states itself.
      const mine = added.concat(updated, removed).filter((id) => id === doc.clientID)
      if (mine.length) this._send(awarenessMessage(awareness, mine))
    }
    this._onOnline = () => { if (this.shouldConnect) this._connectNow() }
    this._onOffline = () => {
      if (!this.shouldConnect) return
      this._clearRetry()
      if (this.ws) this._abandon(1000, 'offline')
      else this._setStatus('offline')
    }
    this._onUnload = () => {
      awarenessProtocol.removeAwarenessStates(awareness, [doc.clientID], 'window unload')
    }
    this._silenceCheck = setInterval(() => {
      if (this.ws && this.ws.readyState === WebSocket.OPEN &&
          Date.now() - this.lastMessageAt > SILENCE_TIMEOUT_MS) {
        this._abandon(4000, 'no message for 30 s')
      }
    }, SILENCE_TIMEOUT_MS / 6)

    doc.on('update', this._onDocUpdate)
    awareness.on('update', this._onAwarenessUpdate)
    window.addEventListener('online', this._onOnline)
    window.addEventListener('offline', this._onOffline)
    window.addEventListener('pagehide', this._onUnload)
    if (connect) this.connect()
  }

  get connected () {
    return this.status.status === 'connected'
  }

  /** Starts (or resumes) connecting; retries until disconnect() or a final refusal. */
  connect () {
    this.shouldConnect = true
    this._connectNow()
  }

  /** Closes the socket and stops retrying; edits go on locally (and into IndexedDB). */
  disconnect () {
    this.shouldConnect = false
    this._clearRetry()
    if (this.ws) this._abandon(1000, 'disconnect')
    else this._setStatus('offline', { reason: 'disconnected' })
  }

  /** Tries again now instead of waiting for the backoff timer (the "Retry now" button). */
  retryNow () {
    if (this.shouldConnect && !this.ws) this._connectNow()
  }

  destroy () {
    this.disconnect()
    clearInterval(this._silenceCheck)
    this.doc.off('update', this._onDocUpdate)
    this.awareness.off('update', this._onAwarenessUpdate)
    window.removeEventListener('online', this._onOnline)
    window.removeEventListener('offline', this._onOffline)
    window.removeEventListener('pagehide', this._onUnload)
    super.destroy()
  }

  _connectNow () {
    this._clearRetry()
    if (this.ws) return
    if (!navigator.onLine) {
      this._setStatus('offline')
      return
    }
    this._setStatus('connecting')
    const ws = new WebSocket(this.url)
    ws.binaryType = 'arraybuffer'
    this.ws = ws
    this.synced = false
    this._unanswered = null
    this._scopeHeard = false
    this._largestSent = null
    let denial = ''

    ws.onopen = () => {
      this.lastMessageAt = Date.now()
      this._setStatus('connected')
      const encoder = encoding.createEncoder()
      encoding.writeVarUint(encoder, MESSAGE_SYNC)
      syncProtocol.writeSyncStep1(encoder, this.doc)
      this._send(encoder)
      if (this.awareness.getLocalState() !== null) {
        this._send(awarenessMessage(this.awareness, [this.doc.clientID]))
      }
    }
    ws.onmessage = (event) => {
      this.lastMessageAt = Date.now()
      const reason = this._receive(new Uint8Array(event.data))
      if (reason) denial = reason
    }
    ws.onclose = (event) => this._closed(ws, event.code, denial || event.reason || '')
  }

  /**
   * Gives up on the socket now rather than waiting for a closing handshake that may never come
   * (the network is gone, or the socket went silent).
   */
  _abandon (code, reason) {
    const ws = this.ws
    ws.onmessage = ws.onclose = ws.onopen = null
    try { ws.close(code === 1000 ? 1000 : 4000, reason) } catch (_) {}
    this._closed(ws, code, reason)
  }

  _closed (ws, code, reason) {
    if (this.ws !== ws) return
    this.ws = null
    this._setSynced(false)
    // Everyone we saw through this socket is gone as far as we can tell; their cursors go too.
    const others = [...this.awareness.getStates().keys()].filter((id) => id !== this.doc.clientID)
    awarenessProtocol.removeAwarenessStates(this.awareness, others, this)
    if (FINAL_CLOSE_CODES.has(code)) {
      this.shouldConnect = false
      this._setStatus('denied', { code, reason })
    } else if (code === CLOSE_TOO_LARGE) {
      if (!this.unsavedBasis) this.unsavedBasis = this._savedBefore(this._largestSent && this._largestSent.carries)
      this.shouldConnect = false
      this._clearRetry()
      this._setStatus('too-large', { code, reason: reason || 'this change is too large to save' })
    } else if (!this.shouldConnect) {
      this._setStatus('offline', { code, reason: 'disconnected' })
    } else if (!navigator.onLine) {
      this._setStatus('offline', { code })
    } else {
      const slowDown = SLOW_DOWN_CLOSE_CODES.has(code) ? SLOW_DOWN_MIN_MS : 0
      const delay = slowDown + backoffDelay(this.attempt++)
      this._retryTimer = setTimeout(() => { this._retryTimer = null; this._connectNow() }, delay)
      this._setStatus('reconnecting', { code, reason, retryAt: Date.now() + delay })
    }
  }

  /** Handles one frame; returns the reason of a permission-denied message, if it was one. */
  _receive (data) {
    const decoder = decoding.createDecoder(data)
    const type = decoding.readVarUint(decoder)
    switch (type) {
      case MESSAGE_SYNC: {
        if (decoding.peekVarUint(decoder) === syncProtocol.messageYjsSyncStep1) {
          decoding.readVarUint(decoder)
          this._serverStep1(decoding.readVarUint8Array(decoder))
          return ''
        }
        const encoder = encoding.createEncoder()
        encoding.writeVarUint(encoder, MESSAGE_SYNC)
        const syncType = syncProtocol.readSyncMessage(decoder, encoder, this.doc, this)
        if (encoding.length(encoder) > 1) this._send(encoder)
        if (syncType === syncProtocol.messageYjsSyncStep2) {
          this.attempt = 0 // a connection that got this far was a good one
          this._setSynced(true)
        }
        return ''
      }
      case MESSAGE_AWARENESS:
        awarenessProtocol.applyAwarenessUpdate(this.awareness, decoding.readVarUint8Array(decoder), this)
        return ''
      case MESSAGE_AUTH: {
        const authType = decoding.readVarUint(decoder)
        if (authType === AUTH_AUTHENTICATED) {
          this._scope(decoding.readVarString(decoder))
          return ''
        }
        if (authType !== AUTH_PERMISSION_DENIED) return ''
        const denied = decoding.readVarString(decoder)
        this.emit('permission-denied', [denied])
        return denied
      }
      case MESSAGE_QUERY_AWARENESS:
        this._send(awarenessMessage(this.awareness, [...this.awareness.getStates().keys()]))
        return ''
      case MESSAGE_STATELESS:
        this.emit('stateless', [decoding.readVarString(decoder)])
        return ''
      default:
        console.warn('collab: unknown message type', type)
        return ''
    }
  }

  /** The server's sync step 1: answered with our step 2, unless this socket is read-only. */
  _serverStep1 (stateVector) {
    const serverState = Y.decodeStateVector(stateVector)
    this.serverStateVector = serverState
    this._unanswered = null
    if (this.readOnly) this._unanswered = stateVector
    else this._sendStep2(stateVector)
    this.emit('server-state', [serverState])
  }

  _sendStep2 (stateVector) {
    const encoder = encoding.createEncoder()
    encoding.writeVarUint(encoder, MESSAGE_SYNC)
    syncProtocol.writeSyncStep2(encoder, this.doc, stateVector)
    this._send(encoder, { stateVector: Y.decodeStateVector(stateVector) })
  }

  /**
   * The server says what this socket may do: after its step 1 on connect, and, when the role
   * changes on an open socket, just before a fresh step 1 (so the state vector we hold is the
   * current one only for the first scope message of a socket).
   */
  _scope (scope) {
    if (scope !== SCOPE_READ_ONLY && scope !== SCOPE_READ_WRITE) {
      console.warn('collab: unknown scope', scope)
      return
    }
    const first = !this._scopeHeard
    this._scopeHeard = true
    const readOnly = scope === SCOPE_READ_ONLY
    const changed = readOnly !== this.readOnly
    this.readOnly = readOnly
    // On connect the step 1 came first and went unanswered while we took the socket for
    // read-only; a role change is followed by a fresh step 1, answered when it comes.
    if (!readOnly && first && this._unanswered) {
      const stateVector = this._unanswered
      this._unanswered = null
      this._sendStep2(stateVector)
    }
    if (changed) this.emit('scope', [{ readOnly, stateVectorCurrent: first }])
  }

  /**
   * Sends one message, unless it is larger than the server takes: then it is not sent, nor
   * anything after it (the socket is closed, status "too-large"). `carries` says what a
   * document message holds: `{update}`, or `{stateVector}` for a step 2 (all the doc has
   * beyond that state vector).
   */
  _send (encoder, carries = null) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return
    const message = encoding.toUint8Array(encoder)
    if (this.maxMessageBytes > 0 && message.length > this.maxMessageBytes) {
      this.unsavedBasis = this._savedBefore(carries)
      this._abandon(CLOSE_TOO_LARGE, tooLargeMessage(message.length, this.maxMessageBytes))
      return
    }
    if (carries && (!this._largestSent || message.length > this._largestSent.bytes)) {
      this._largestSent = { bytes: message.length, carries }
    }
    this.ws.send(message)
  }

  /**
   * What the server has when the message carrying `carries` (and so everything sent after it)
   * did not reach it: the doc's state vector, less that update (from its first clock per
   * client on), or no more than the state vector a refused step 2 answered.
   */
  _savedBefore (carries) {
    const saved = Y.decodeStateVector(Y.encodeStateVector(this.doc))
    if (carries && carries.update) {
      for (const [client, clock] of Y.parseUpdateMeta(carries.update).from) {
        saved.set(client, Math.min(saved.get(client) ?? clock, clock))
      }
    } else if (carries && carries.stateVector) {
      for (const [client, clock] of saved) saved.set(client, Math.min(clock, carries.stateVector.get(client) || 0))
    }
    return saved
  }

  _setSynced (synced) {
    if (this.synced === synced) return
    this.synced = synced
    this.emit('synced', [synced])
  }

  _setStatus (status, { code = null, reason = '', retryAt = null } = {}) {
    this.status = { status, code, reason, retryAt }
    this.emit('status', [this.status])
  }

  _clearRetry () {
    if (this._retryTimer !== null) clearTimeout(this._retryTimer)
    this._retryTimer = null
  }
}

function awarenessMessage (awareness, clients) {
  const encoder = encoding.createEncoder()
  encoding.writeVarUint(encoder, MESSAGE_AWARENESS)
  encoding.writeVarUint8Array(encoder, awarenessProtocol.encodeAwarenessUpdate(awareness, clients))
  return encoder
}
