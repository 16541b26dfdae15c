// The stock y-websocket client (WebsocketProvider from y-websocket@1.5.4, Yjs, ws), driven by
// the Python tests against live collab servers (tests/live.py, tests/test_interop.py,
// tests/realtime/test_live.py).
//
//   node client.mjs '<scenario JSON>'
//
// A scenario is {"timeout": seconds per wait (30), "steps": [...]}; the steps run in order. Each
// step names a Y.Doc ("doc", default "main"; created on first use) and/or a provider
// ("provider", default "p"). The shared text is ydoc.getText('codemirror').
//
//   connect     {url, room, params?, origin?}  new WebsocketProvider(url, room, doc, {params})
//   synced      wait until the provider is synced (it received the server's sync step 2)
//   insert      {text, index?}                 insert at index (default: the end)
//   bulk_insert {total, chunk}                 insert `total` chars, one update per `chunk`
//   type_until_close {interval_ms, prefix, announce_after, after_close}
//               insert "<prefix><n> " every interval until the provider's socket closes,
//               then `after_close` more tokens while offline; prints "typing" once after
//               `announce_after` tokens and "typed" with every token at the end
//   wait_text   {contains?, excludes?, length?}  wait until the text satisfies all of them
//   confirm     {url, room, params?}           wait until a fresh provider (a new Y.Doc on its
//               own socket) has received everything this doc holds: the server has it
//   disconnect / reconnect                      provider.disconnect() / provider.connect()
//   wait_close  wait for the provider's socket to close (prints "close" with code, reason)
//   wait_denied wait for a permission-denied (auth) message on the provider
//   destroy     provider.destroy()
//   sleep       {ms}
//   wait_line   wait for one line on stdin (the test's go-ahead)
//   print       {full?}                        prints "text" (length, sha256, text if small)
//
// Every event is one JSON line on stdout: status, synced, close, permission-denied, typing,
// typed, confirmed, text, error, done. Every wait is bounded by the scenario's timeout; on a
// timeout or any error the script prints an "error" event, writes the reason to stderr and
// exits 2.

import { createHash } from 'node:crypto'
import { createInterface } from 'node:readline'

import WebSocket from 'ws'
import { WebsocketProvider } from 'y-websocket'
import * as Y from 'yjs'

const TEXT_NAME = 'codemirror'
const SMALL_TEXT = 4096

const scenario = JSON.parse(process.argv[2] ?? '{}')
const timeoutMs = (scenario.timeout ?? 30) * 1000

// `t`: milliseconds since the script started, to read a failed run's timeline.
const emit = (event, fields = {}) => {
  const t = Math.round(performance.now())
  process.stdout.write(JSON.stringify({ event, t, ...fields }) + '\n')
}

const fail = (message) => {
  emit('error', { message })
  process.stderr.write(`client.mjs: ${message}\n`)
  // Let stdout drain before leaving: the test reads the error event from it.
  process.stdout.write('', () => process.exit(2))
}

// y-websocket reports the server's permission-denied (auth) message only through
// console.warn; keep the stock handler and observe what it says.
const warn = console.warn.bind(console)
console.warn = (...args) => {
  const message = args.map(String).join(' ')
  if (message.startsWith('Permission denied to access ')) {
    const url = message.slice('Permission denied to access '.length).split('.\n')[0]
    const provider = [...providers.entries()].find(([, p]) => p.url === url)
    const reason = message.split('\n').slice(1).join('\n')
    if (provider) stats.get(provider[0]).denied.push(reason)
    emit('permission-denied', { provider: provider ? provider[0] : null, reason })
  }
  warn(...args)
}

const docs = new Map()
const providers = new Map()
const stats = new Map() // provider name -> counts of received frames by kind and its closes
let probes = 0

const docNamed = (name = 'main') => {
  if (!docs.has(name)) docs.set(name, new Y.Doc())
  return docs.get(name)
}
const textOf = (doc) => doc.getText(TEXT_NAME).toString()
const sha256 = (text) => createHash('sha256').update(text, 'utf8').digest('hex')

const FRAME_KINDS = {
  '0:0': 'sync_step1',
  '0:1': 'sync_step2',
  '0:2': 'sync_update',
  1: 'awareness',
  2: 'auth',
  3: 'query_awareness'
}

const frameKind = (data) => {
  const bytes = new Uint8Array(data)
  if (bytes.length === 0) return 'empty'
  // Both varUints are < 128 in every known message, so one byte each.
  const key = bytes[0] === 0 ? `0:${bytes[1]}` : String(bytes[0])
  return FRAME_KINDS[key] ?? 'unknown'
}

// The WebSocket implementation handed to the stock provider: ws (which sends no Origin
// header unless the step gives one, as in docs/protocol.md), plus a tally of what arrives.
const socketClass = (name, origin) =>
  class extends WebSocket {
    constructor (url, protocols) {
      super(url, protocols, { origin, maxPayload: 256 * 1024 * 1024 })
      const counts = stats.get(name).frames
      this.addEventListener('message', (event) => {
        const kind = frameKind(event.data)
        counts[kind] = (counts[kind] ?? 0) + 1
      })
    }
  }

const connect = (name, doc, { url, room, params = {}, origin }) => {
  if (providers.has(name)) throw new Error(`provider ${name} already exists`)
  stats.set(name, { frames: {}, closes: [], denied: [] })
  const provider = new WebsocketProvider(url, room, doc, {
    params,
    WebSocketPolyfill: socketClass(name, origin),
    disableBc: true // peers in one process must meet only through the server
  })
  provider.on('status', ({ status }) => emit('status', { provider: name, status }))
  provider.on('synced', (synced) => emit('synced', { provider: name, synced }))
  provider.on('connection-close', (event) => {
    const close = { code: event?.code ?? null, reason: event?.reason ?? '' }
    stats.get(name).closes.push(close)
    emit('close', { provider: name, ...close, frames: stats.get(name).frames })
  })
  provider.on('connection-error', (event) =>
    emit('connection-error', { provider: name, message: String(event?.message ?? event) })
  )
  providers.set(name, provider)
  return provider
}

const providerNamed = (name = 'p') => {
  const provider = providers.get(name)
  if (!provider) throw new Error(`no provider named ${name}`)
  return provider
}

// Resolves when check() is true, re-checking on every change of `doc` (if given) and at
// least every 50 ms; rejects after the scenario's timeout with `what` in the message.
const waitUntil = (what, check, doc = null) =>
  new Promise((resolve, reject) => {
    if (check()) return resolve()
    let timer = null
    let poll = null
    const done = (error) => {
      clearTimeout(timer)
      clearInterval(poll)
      if (doc) doc.off('update', onUpdate)
      error ? reject(error) : resolve()
    }
    const onUpdate = () => {
      if (check()) done()
    }
    if (doc) doc.on('update', onUpdate)
    poll = setInterval(onUpdate, 50)
    timer = setTimeout(
      () => done(new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`)),
      timeoutMs
    )
  })

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// Every client ID and clock `doc` has is also in `other`.
const covers = (other, doc) => {
  const have = Y.decodeStateVector(Y.encodeStateVector(other))
  for (const [client, clock] of Y.decodeStateVector(Y.encodeStateVector(doc))) {
    if ((have.get(client) ?? 0) < clock) return false
  }
  return true
}

const textReport = (doc, full) => {
  const text = textOf(doc)
  const report = { length: text.length, sha256: sha256(text) }
  if (full ?? text.length <= SMALL_TEXT) report.text = text
  return report
}

const lines = createInterface({ input: process.stdin })
const pendingLines = []
const lineWaiters = []
lines.on('line', (line) => {
  const waiter = lineWaiters.shift()
  waiter ? waiter(line) : pendingLines.push(line)
})
const nextLine = () =>
  pendingLines.length
    ? Promise.resolve(pendingLines.shift())
    : Promise.race([
      new Promise((resolve) => lineWaiters.push(resolve)),
      sleep(timeoutMs).then(() => {
        throw new Error(`timed out after ${timeoutMs / 1000} s waiting for a line on stdin`)
      })
    ])

const steps = {
  async connect (step) {
    connect(step.provider ?? 'p', docNamed(step.doc), step)
  },

  async synced (step) {
    const provider = providerNamed(step.provider)
    await waitUntil(`provider ${step.provider ?? 'p'} to sync`, () => provider.synced)
  },

  async insert (step) {
    const text = docNamed(step.doc).getText(TEXT_NAME)
    text.insert(step.index ?? text.length, step.text)
  },

  async bulk_insert (step) {
    const doc = docNamed(step.doc)
    const text = doc.getText(TEXT_NAME)
    const hash = createHash('sha256')
    let written = 0
    for (let n = 0; written < step.total; n++) {
      const size = Math.min(step.chunk, step.total - written)
      const head = `chunk ${n}\n`
      const chunk = (head + '0123456789abcdef\n'.repeat(Math.ceil(size / 17))).slice(0, size)
      text.insert(text.length, chunk) // one Yjs update, one frame, per chunk
      hash.update(chunk, 'utf8')
      written += size
      // Let the socket drain between chunks, as typing would.
      await sleep(5)
    }
    emit('inserted', { length: written, sha256: hash.digest('hex') })
  },

  async type_until_close (step) {
    const name = step.provider ?? 'p'
    const text = docNamed(step.doc).getText(TEXT_NAME)
    const closes = stats.get(name).closes
    const closedBefore = closes.length
    const tokens = []
    const type = () => {
      const token = `${step.prefix ?? 't'}${tokens.length}`
      text.insert(text.length, token + ' ')
      tokens.push(token)
      if (tokens.length === (step.announce_after ?? 10)) emit('typing', { count: tokens.length })
    }
    const deadline = Date.now() + timeoutMs
    while (closes.length === closedBefore) {
      if (Date.now() > deadline) {
        throw new Error(`timed out after ${timeoutMs / 1000} s typing until ${name} closed`)
      }
      type()
      await sleep(step.interval_ms ?? 25)
    }
    for (let n = 0; n < (step.after_close ?? 0); n++) {
      type()
      await sleep(step.interval_ms ?? 25)
    }
    emit('typed', { provider: name, tokens, close: closes[closes.length - 1] })
  },

  async wait_text (step) {
    const doc = docNamed(step.doc)
    const contains = step.contains ?? []
    const excludes = step.excludes ?? []
    await waitUntil(
      `text of ${step.doc ?? 'main'} to contain ${JSON.stringify(contains)}` +
        (step.length !== undefined ? ` and be ${step.length} long` : ''),
      () => {
        const text = textOf(doc)
        return (
          contains.every((part) => text.includes(part)) &&
          excludes.every((part) => !text.includes(part)) &&
          (step.length === undefined || text.length === step.length)
        )
      },
      doc
    )
  },

  async confirm (step) {
    const doc = docNamed(step.doc)
    const name = `confirm-${++probes}`
    const probe = new Y.Doc()
    const provider = connect(name, probe, step)
    try {
      await waitUntil(
        `a fresh client on ${step.url} to receive everything ${step.doc ?? 'main'} holds`,
        () => provider.synced && covers(probe, doc),
        probe
      )
    } finally {
      provider.destroy()
      providers.delete(name)
    }
    emit('confirmed', { doc: step.doc ?? 'main', length: textOf(probe).length })
  },

  async disconnect (step) {
    providerNamed(step.provider).disconnect()
  },

  async reconnect (step) {
    providerNamed(step.provider).connect()
  },

  async wait_close (step) {
    const name = step.provider ?? 'p'
    const closes = stats.get(name).closes
    await waitUntil(`provider ${name}'s socket to close`, () => closes.length > 0)
  },

  async wait_denied (step) {
    const name = step.provider ?? 'p'
    const denied = stats.get(name).denied
    await waitUntil(`a permission-denied message on provider ${name}`, () => denied.length > 0)
  },

  async destroy (step) {
    providerNamed(step.provider).destroy()
    providers.delete(step.provider ?? 'p')
  },

  async sleep (step) {
    await sleep(step.ms)
  },

  async wait_line () {
    emit('waiting')
    const line = await nextLine()
    emit('line', { line })
  },

  async print (step) {
    const name = step.provider ?? 'p'
    emit('text', {
      doc: step.doc ?? 'main',
      ...textReport(docNamed(step.doc), step.full),
      frames: stats.get(name)?.frames ?? null,
      closes: stats.get(name)?.closes ?? null
    })
  }
}

const run = async () => {
  for (const [index, step] of (scenario.steps ?? []).entries()) {
    const action = steps[step.do]
    if (!action) throw new Error(`step ${index}: unknown action ${JSON.stringify(step.do)}`)
    try {
      await action(step)
    } catch (error) {
      throw new Error(`step ${index} (${step.do}): ${error.message}`)
    }
  }
  for (const provider of providers.values()) provider.destroy()
  emit('done')
  process.stdout.write('', () => process.exit(0))
}

run().catch((error) => fail(error.message))
