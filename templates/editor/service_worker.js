// collab's service worker, served at /sw.js (scope: the whole site) by editor/offline_views.py,
// which fills in CONFIG. It keeps the page of every document opened in this browser, and the
// assets that page loads, so that a document reloads with no network: the text then comes from
// IndexedDB (y-indexeddb) and the provider says "Offline" until the network returns.
// docs/frontend.md, "Offline first".
//
//   document pages  GET /documents/<uuid>/: network first; a good answer replaces the kept copy,
//                   a refusal (redirect to log in, 403, 404) deletes it, no answer (or a 5xx, or
//                   none within NETWORK_TIMEOUT_MS) serves the kept copy
//   page assets     CONFIG.assets: cache first, fetched when the worker installs
//   anything else   not touched: the API, the WebSocket, /accounts/, /admin/, images, POSTs
//
// Signing in or out (a POST to one of CONFIG.sessionPaths) forgets every kept page, so the
// next person at a shared computer cannot open them offline. The cache is named after
// CONFIG.version, which changes with the assets: a deploy installs a new worker that fetches
// the new assets and the pages it kept, and the old cache is deleted when it takes over.
//
// This file is a Django template: nothing below may contain two opening braces in a row.
'use strict'

const CONFIG = {{ config|safe }}

const PREFIX = 'collab-offline-'
const CACHE = PREFIX + CONFIG.version
const ASSETS = new Set(CONFIG.assets)
const SESSION_PATHS = new Set(CONFIG.sessionPaths)
const DOCUMENT_PAGE = /^\/documents\/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\/$/
// On a network that answers nothing (a train between stations) the kept copy is served after
// this long: the page is a shell, whose text comes from IndexedDB and then the socket anyway.
const NETWORK_TIMEOUT_MS = 5000

self.addEventListener('install', (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE)
    // Past the HTTP cache: in development the assets' URLs do not change with their contents.
    await cache.addAll(CONFIG.assets.map((url) => new Request(url, { cache: 'reload' })))
    await carryPagesOver(cache)
    await self.skipWaiting()
  })())
})

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) {
      if (name.startsWith(PREFIX) && name !== CACHE) await caches.delete(name)
    }
    // Pages open since before this worker (the first visit) come under it, so that signing out
    // from them is seen too.
    await self.clients.claim()
  })())
})

self.addEventListener('fetch', (event) => {
  const request = event.request
  const url = new URL(request.url)
  if (url.origin !== self.location.origin) return
  if (request.method === 'POST' && SESSION_PATHS.has(url.pathname)) {
    // Not answered here: the browser posts as usual while the kept pages are deleted.
    event.waitUntil(forgetPages())
    return
  }
  if (request.method !== 'GET' || url.search) return
  if (request.mode === 'navigate' && DOCUMENT_PAGE.test(url.pathname)) {
    event.respondWith(documentPage(event, pageKey(url)))
  } else if (ASSETS.has(url.pathname)) {
    event.respondWith(asset(request))
  }
})

// The page asks for itself to be kept when it was not loaded through this worker (the first
// visit, before the worker existed) and hears back whether it is (src/offline.js).
self.addEventListener('message', (event) => {
  const data = event.data || {}
  const reply = event.ports[0]
  if (data.type !== 'keep' || !reply) return
  event.waitUntil(keepPage(data.url).then((kept) => reply.postMessage({ kept }), () => reply.postMessage({ kept: false })))
})

/** One entry per document: its URL without query or fragment. */
function pageKey (url) {
  return url.origin + url.pathname
}

async function documentPage (event, key) {
  const cache = await caches.open(CACHE)
  const network = fetch(event.request)
  let response
  try {
    response = await Promise.race([network, keptAfterTimeout(cache, key)])
  } catch (error) {
    return (await cache.match(key)) || offlinePage()
  }
  if (response.type === 'basic' && response.status === 200) {
    event.waitUntil(cache.put(key, response.clone()))
  } else if (response.type === 'kept') {
    // The network was slow: the kept copy now, and the network's answer for next time.
    event.waitUntil(network.then((late) => remember(cache, key, late), () => {}))
    return response.copy
  } else if (response.status >= 500) {
    return (await cache.match(key)) || response
  } else {
    // Redirected to log in (type "opaqueredirect"), no access, gone: not for this browser now.
    event.waitUntil(cache.delete(key))
  }
  return response
}

/** Never settles unless a copy is kept and NETWORK_TIMEOUT_MS passed; a wrapper, not a Response. */
function keptAfterTimeout (cache, key) {
  return new Promise((resolve) => {
    setTimeout(async () => {
      const copy = await cache.match(key)
      if (copy) resolve({ type: 'kept', copy })
    }, NETWORK_TIMEOUT_MS)
  })
}

async function remember (cache, key, response) {
  if (response.type === 'basic' && response.status === 200) await cache.put(key, response)
  else if (response.status < 500) await cache.delete(key)
}

async function asset (request) {
  const cache = await caches.open(CACHE)
  const kept = await cache.match(request, { ignoreVary: true })
  if (kept) return kept
  const response = await fetch(request)
  if (response.type === 'basic' && response.status === 200) await cache.put(request, response.clone())
  return response
}

/** Keeps a document's page (fetching it if not kept yet); true when it is kept. */
async function keepPage (href) {
  const url = new URL(href, self.location.origin)
  if (url.origin !== self.location.origin || !DOCUMENT_PAGE.test(url.pathname)) return false
  const key = pageKey(url)
  const cache = await caches.open(CACHE)
  if (await cache.match(key)) return true
  const response = await fetch(key, { credentials: 'same-origin', redirect: 'manual' })
  await remember(cache, key, response)
  return Boolean(await cache.match(key))
}

/** On install: the pages an older worker kept, fetched again (they name the old assets). */
async function carryPagesOver (cache) {
  for (const name of await caches.keys()) {
    if (!name.startsWith(PREFIX) || name === CACHE) continue
    const old = await caches.open(name)
    for (const request of await old.keys()) {
      const url = new URL(request.url)
      if (!DOCUMENT_PAGE.test(url.pathname)) continue
      try {
        await remember(cache, pageKey(url), await fetch(pageKey(url), { credentials: 'same-origin', redirect: 'manual' }))
      } catch (error) {
        // Offline again already: this one comes back on the next visit.
      }
    }
  }
}

/** Deletes every kept document page, of this worker's cache and any other of ours. */
async function forgetPages () {
  for (const name of await caches.keys()) {
    if (!name.startsWith(PREFIX)) continue
    const cache = await caches.open(name)
    for (const request of await cache.keys()) {
      if (DOCUMENT_PAGE.test(new URL(request.url).pathname)) await cache.delete(request)
    }
  }
}

/** For a document that was never kept (or forgotten at sign-out), with no network. */
function offlinePage () {
  const html = '<!doctype html><html lang="en"><head><meta charset="utf-8">' +
    '<meta name="viewport" content="width=device-width, initial-scale=1"><title>Offline · collab</title></head>' +
    '<body><h1>You are offline</h1><p>This document has not been opened in this browser while ' +
    'signed in, so there is no copy of it here. It opens when the network is back.</p>' +
    '<p><a href="">Try again</a></p></body></html>'
  return new Response(html, {
    status: 503,
    headers: {
      'Content-Type': 'text/html; charset=utf-8',
      'Content-Security-Policy': "default-src 'none'",
      'Cache-Control': 'no-store',
    },
  })
}
