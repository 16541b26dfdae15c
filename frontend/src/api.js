// JSON over fetch with the session cookie. Unsafe methods carry the CSRF token Django set in the
// csrftoken cookie (falling back to the one rendered into the page).

export class ApiError extends Error {
  constructor (status, body) {
    super(apiMessage(status, body))
    this.status = status
    this.body = body
  }
}

function apiMessage (status, body) {
  if (body && typeof body === 'object') {
    if (typeof body.detail === 'string') return body.detail
    const first = Object.values(body).flat()[0]
    if (typeof first === 'string') return first
  }
  if (status === 403) return 'You are not allowed to do that.'
  if (status === 404) return 'Not found.'
  if (status >= 500) return 'The server failed. Try again in a moment.'
  return `The server answered ${status}.`
}

export function csrfToken () {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/)
  return match ? decodeURIComponent(match[1]) : (document.querySelector('[name=csrfmiddlewaretoken]')?.value || '')
}

/** `body` is sent as JSON; `form`, a FormData (files), as multipart with the browser's boundary. */
export async function api (url, { method = 'GET', body, form } = {}) {
  const headers = { Accept: 'application/json' }
  if (body !== undefined) headers['Content-Type'] = 'application/json'
  if (method !== 'GET' && method !== 'HEAD') headers['X-CSRFToken'] = csrfToken()
  let response
  try {
    response = await fetch(url, {
      method,
      headers,
      credentials: 'same-origin',
      body: form ?? (body === undefined ? undefined : JSON.stringify(body)),
    })
  } catch (_) {
    throw new ApiError(0, { detail: 'No connection to the server.' })
  }
  const type = response.headers.get('Content-Type') || ''
  const data = type.includes('json') ? await response.json().catch(() => null) : null
  if (!response.ok) throw new ApiError(response.status, data)
  return data
}
