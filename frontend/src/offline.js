// The page's side of the service worker (templates/editor/service_worker.js, served at /sw.js):
// registers it and makes sure this document's page is kept, so that it reloads with no network.
// See docs/frontend.md, "Offline first".

const KEEP_TIMEOUT_MS = 30_000

/**
 * Registers the worker at `workerUrl` (scope: the whole site) and has it keep the page at
 * `pageUrl`. Resolves to true once the page is kept, false where it cannot be: no service
 * workers (plain HTTP to a host other than localhost, some private windows), or the worker did
 * not answer. Never rejects; the editor works the same either way, only not after an offline
 * reload.
 */
export async function keepForOffline (workerUrl, pageUrl) {
  if (!workerUrl || !('serviceWorker' in navigator)) return false
  try {
    // Registering again is how a deploy's new worker is found: the browser fetches the script
    // and installs it when it differs.
    await navigator.serviceWorker.register(workerUrl, { scope: '/' })
    const registration = await navigator.serviceWorker.ready
    return await ask(registration.active, { type: 'keep', url: pageUrl })
  } catch (error) {
    console.warn('collab: this document cannot be kept for offline use', error)
    return false
  }
}

function ask (worker, message) {
  return new Promise((resolve) => {
    const channel = new MessageChannel()
    const timer = setTimeout(() => resolve(false), KEEP_TIMEOUT_MS)
    channel.port1.onmessage = (event) => {
      clearTimeout(timer)
      resolve(Boolean(event.data && event.data.kept))
    }
    worker.postMessage(message, [channel.port2])
  })
}
