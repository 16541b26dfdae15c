// The document's title. Inline editing: the form still works without JavaScript (it posts to
// the rename view and reloads); with it, Enter or leaving the field saves in the background,
// Esc puts the old title back. A rename made anywhere (another tab, another person, the API,
// the admin) comes over the socket (a "title" stateless message) and shows at once: in the
// field, the page's heading and the window title.

/**
 * Binds the title form (editors; null for viewers) and the page's heading; returns
 * `{ show(title) }` for renames made elsewhere.
 */
export function bindTitle (form, { heading, toast }) {
  const input = form ? form.querySelector('input[name=title]') : null
  let saved = input ? input.value : (heading ? heading.textContent : '')
  let saving = false

  const show = (title) => {
    if (typeof title !== 'string' || !title) return
    const shown = saved
    saved = title
    document.title = `${title} · collab`
    if (heading) {
      heading.textContent = title
      heading.title = title
    }
    // Someone typing a new title here keeps what they typed; their save compares with this.
    if (input && (document.activeElement !== input || input.value === shown)) input.value = title
  }
  if (!form) return { show }

  form.classList.add('is-enhanced')
  const save = async () => {
    const title = input.value.trim()
    if (saving || title === saved) return
    if (!title) {
      input.value = saved
      return
    }
    saving = true
    form.setAttribute('aria-busy', 'true')
    try {
      const response = await fetch(form.action, {
        method: 'POST',
        body: new URLSearchParams(new FormData(form)),
        credentials: 'same-origin',
      })
      // The view redirects back to the page, which carries the outcome as a message.
      const page = new DOMParser().parseFromString(await response.text(), 'text/html')
      const error = page.querySelector('.message.error')
      if (!response.ok || error) throw new Error(error ? error.textContent : `The server answered ${response.status}.`)
      input.value = title
      show(title)
      toast('Renamed')
    } catch (error) {
      toast(`Could not rename: ${error.message}`, 'error')
      input.value = saved
    } finally {
      saving = false
      form.removeAttribute('aria-busy')
    }
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault()
    save()
    input.blur()
  })
  input.addEventListener('blur', save)
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') {
      input.value = saved
      input.blur()
      event.preventDefault()
      event.stopPropagation()
    }
  })
  return { show }
}
