// Inline title editing: the form still works without JavaScript (it posts to the rename view and
// reloads); with it, Enter or leaving the field saves in the background, Esc puts the old title
// back.

export function bindTitle (form, { toast }) {
  if (!form) return
  const input = form.querySelector('input[name=title]')
  let saved = input.value
  let saving = false
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
      saved = title
      input.value = title
      document.title = `${title} · collab`
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
}
