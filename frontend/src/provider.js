// A y-websocket client for collab's /ws/documents/<uuid>: the standard protocol (y-protocols sync,
// awareness and auth messages; docs/protocol.md), with what the stock WebsocketProvider lacks:
//
// - reconnects with *full-jitter* exponential backoff (base 500 ms, cap 30 s), so that after a
//   server restart thousands of clients spread their returns over the window instead of all
//   coming back in the same second (the stock provider backs off without jitter);
// - tells the page what it is doing: "connecting", "connected", "reconnecting" (with the time of
//   the next attempt, for "reconnecting in 3 s"), "offline" (navigator.onLine), and "denied"
//   when the server refuses with 4401/4403/4404, after which it stops retrying;
// - goes offline at once when the browser says so, and back when it returns.
//
// Handshake (y-protocols/sync.js): on open we send our sync step 1 and our awareness state; we
// answer the server's step 1 with a step 2, which carries whatever was typed while offline.
// Updates that came from the socket are applied with this provider as origin and never sent
// back. The server echoes awareness, so on a quiet document we still hear from it at least every
// 15 s (our own renewals); hearing nothing for 30 s means the socket is dead and we reconnect.

import * as decoding from 'lib0/decoding'
import * as encoding from 'lib0/encoding'
import { ObservableV2 } from 'lib0/observable'
import * as authProtocol from 'y-protocols/auth'
import * as awarenessProtocol from 'y-protocols/awareness'
import * as syncProtocol from 'y-protocols/sync'

const MESSAGE_SYNC = 0
const MESSAGE_AWARENESS = 1
const MESSAGE_AUTH = 2
const MESSAGE_QUERY_AWARENESS = 3

export const BACKOFF_BASE_MS = 500
export const BACKOFF_CAP_MS = 30000
// Twice the awareness renewal period (15 s), as in the stock client.
const SILENCE_TIMEOUT_MS = 30000

// Close codes after which retrying cannot help (docs/protocol.md).
const FINAL_CLOSE_CODES = new Set([4401, 4403, 4404])

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
 * (reason: string).
 */
export class CollabProvider extends ObservableV2 {
  constructor (url, doc, { awareness = new awarenessProtocol.Awareness(doc), connect = true } = {}) {
    super()
    this.url = url
    this.doc = doc
    this.awareness = awareness
    this.ws = null
    this.synced = false
    this.status = { status: 'connecting', retryAt: null, code: null, reason: '' }
    this.attempt = 0
    this.shouldConnect = false
    this.lastMessageAt = 0
    this._retryTimer = null

    this._onDocUpdate = (update, origin) => {
      if (origin === this) return
      const encoder = encoding.createEncoder()
      encoding.writeVarUint(encoder, MESSAGE_SYNC)
      syncProtocol.writeUpdate(encoder, update)
      this._send(encoder)
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
    } else if (!this.shouldConnect) {
      this._setStatus('offline', { code, reason: 'disconnected' })
    } else if (!navigator.onLine) {
      this._setStatus('offline', { code })
    } else {
      const delay = backoffDelay(this.attempt++)
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
        let denied = ''
        authProtocol.readAuthMessage(decoder, this.doc, (_doc, reason) => { denied = reason })
        if (denied) this.emit('permission-denied', [denied])
        return denied
      }
      case MESSAGE_QUERY_AWARENESS:
        this._send(awarenessMessage(this.awareness, [...this.awareness.getStates().keys()]))
        return ''
      default:
        console.warn('collab: unknown message type', type)
        return ''
    }
  }

  _send (encoder) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(encoding.toUint8Array(encoder))
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
