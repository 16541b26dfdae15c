// The history panel (issue 6): named versions, newest first, with author and time; a preview of
// a version's text; "Save version" and "Restore" for editors. A restore is done by the server,
// which applies it to the live document: everyone (this page included) sees it arrive through
// the socket like any other edit.

import { api } from './api.js'
import { renderMarkdown } from './preview.js'

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' })
const absolute = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' })

export function timeAgo (date, now = Date.now()) {
  const seconds = Math.round((date.getTime() - now) / 1000)
  const steps = [[60, 'second'], [60, 'minute'], [24, 'hour'], [7, 'day'], [4.35, 'week'], [12, 'month']]
  let value = seconds
  for (const [size, unit] of steps) {
    if (Math.abs(value) < size) return Math.abs(value) < 10 && unit === 'second' ? 'just now' : relative.format(Math.round(value), unit)
    value /= size
  }
  return relative.format(Math.round(value), 'year')
}

export class HistoryPanel {
  constructor (root, { apiBase, canEdit, toast }) {
    this.root = root
    this.url = `${apiBase}versions/`
    this.canEdit = canEdit
    this.toast = toast
    this.loaded = false
    this.next = null
    this.list = root.querySelector('[data-history=list]')
    this.more = root.querySelector('[data-history=more]')
    this.empty = root.querySelector('[data-history=empty]')
    this.error = root.querySelector('[data-history=error]')
    this.form = root.querySelector('[data-history=form]')
    this.detail = root.querySelector('[data-history=detail]')
    this.browse = root.querySelector('[data-history=browse]')

    this.more.addEventListener('click', () => this.load(this.next))
    this.form?.addEventListener('submit', (event) => { event.preventDefault(); this.save() })
    this.detail.querySelector('[data-history=back]').addEventListener('click', () => this.showList())
    this.detail.querySelector('[data-history=restore]')?.addEventListener('click', () => this.askRestore(true))
    this.detail.querySelector('[data-history=restore-cancel]')?.addEventListener('click', () => this.askRestore(false))
    this.detail.querySelector('[data-history=restore-confirm]')?.addEventListener('click', () => this.restore())
  }

  get isOpen () {
    return !this.root.hidden
  }

  open () {
    this.root.hidden = false
    document.dispatchEvent(new CustomEvent('collab:layout'))
    if (!this.loaded) this.reload()
    ;(this.form?.querySelector('input') || this.root.querySelector('button')).focus()
  }

  close () {
    this.root.hidden = true
    document.dispatchEvent(new CustomEvent('collab:layout'))
  }

  toggle () {
    if (this.isOpen) this.close()
    else this.open()
  }

  /** Opens the panel with the "name this version" field focused (Ctrl/Cmd-S). */
  startSave () {
    if (!this.canEdit) return
    this.open()
    this.showList()
    this.form.querySelector('input').focus()
  }

  async reload () {
    this.list.replaceChildren()
    this.loaded = true
    await this.load(this.url)
  }

  async load (url) {
    this.setError('')
    this.more.hidden = true
    this.root.setAttribute('aria-busy', 'true')
    try {
      const page = await api(url)
      for (const version of page.results) this.list.append(this.item(version))
      this.next = page.next
      this.more.hidden = !page.next
    } catch (error) {
      this.loaded = false
      this.setError(error.status === 404 ? 'History is not available for this document.' : error.message)
    } finally {
      this.root.removeAttribute('aria-busy')
      this.empty.hidden = this.list.children.length > 0 || !this.loaded
    }
  }

  item (version) {
    const li = document.createElement('li')
    const button = document.createElement('button')
    button.type = 'button'
    button.className = 'version'
    button.dataset.versionId = version.id
    const name = document.createElement('span')
    name.className = 'version-name'
    name.textContent = version.name || 'Untitled version'
    const meta = document.createElement('span')
    meta.className = 'version-meta'
    const created = new Date(version.created_at)
    const time = document.createElement('time')
    time.dateTime = version.created_at
    time.textContent = timeAgo(created)
    time.title = absolute.format(created)
    meta.append(version.author ? `${version.author.username} · ` : 'automatic · ', time)
    button.append(name, meta)
    button.addEventListener('click', () => this.show(version.id))
    li.append(button)
    return li
  }

  async save () {
    const input = this.form.querySelector('input')
    const button = this.form.querySelector('button')
    const name = input.value.trim()
    if (!name) {
      input.focus()
      this.setError('Give the version a name.')
      return
    }
    button.disabled = true
    this.setError('')
    try {
      const version = await api(this.url, { method: 'POST', body: { name } })
      input.value = ''
      this.list.prepend(this.item(version))
      this.empty.hidden = true
      this.toast(`Saved version “${version.name || name}”`)
    } catch (error) {
      this.setError(error.message)
    } finally {
      button.disabled = false
    }
  }

  async show (id) {
    this.setError('')
    try {
      const version = await api(`${this.url}${id}/`)
      this.current = version
      this.detail.querySelector('[data-history=title]').textContent = version.name || 'Untitled version'
      const created = new Date(version.created_at)
      this.detail.querySelector('[data-history=meta]').textContent =
        `${version.author ? version.author.username : 'automatic'} · ${absolute.format(created)}`
      this.detail.querySelector('[data-history=text]').innerHTML =
        renderMarkdown(version.text || '') || '<p class="preview-empty">This version is empty.</p>'
      this.askRestore(false)
      this.browse.hidden = true
      this.detail.hidden = false
      this.detail.querySelector('[data-history=back]').focus()
    } catch (error) {
      this.setError(error.message)
    }
  }

  showList () {
    this.detail.hidden = true
    this.browse.hidden = false
  }

  askRestore (asking) {
    const confirm = this.detail.querySelector('[data-history=confirm]')
    if (!confirm) return
    confirm.hidden = !asking
    this.detail.querySelector('[data-history=restore]').hidden = asking
    if (asking) this.detail.querySelector('[data-history=restore-confirm]').focus()
  }

  async restore () {
    const version = this.current
    const button = this.detail.querySelector('[data-history=restore-confirm]')
    button.disabled = true
    try {
      await api(`${this.url}${version.id}/restore/`, { method: 'POST', body: {} })
      this.toast(`Restored “${version.name || 'Untitled version'}” for everyone`)
      this.showList()
      this.reload() // the server may have recorded the restore as a version of its own
    } catch (error) {
      this.setError(error.message)
    } finally {
      button.disabled = false
      this.askRestore(false)
    }
  }

  setError (message) {
    this.error.textContent = message
    this.error.hidden = !message
  }
}
