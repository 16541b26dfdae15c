// The history panel (issue 6): versions newest first, named or automatic, with author and time;
// a version's text, or its changes compared with the current text or another version (a
// unified diff from the server, shown line by line as text); "Save version" and "Restore" for
// editors. A restore is done by the server, which first keeps the text it replaces as a version
// ("Before restore of …", so restoring that one undoes it) and applies the restore to the live
// document: everyone (this page included) sees it arrive through the socket like any other edit.

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
    this.versions = new Map() // id → version, as listed: the versions a diff can compare with
    this.view = 'text' // or 'changes': which the detail shows, kept from one version to the next
    this.diffRequest = 0
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
    for (const button of this.detail.querySelectorAll('[data-history-view]')) {
      button.addEventListener('click', () => this.showView(button.dataset.historyView))
    }
    this.against = this.detail.querySelector('[data-history=against]')
    this.against.addEventListener('change', () => this.loadDiff())
  }

  get isOpen () {
    return !this.root.hidden
  }

  open () {
    this.root.hidden = false
    document.dispatchEvent(new CustomEvent('collab:layout'))
    // Every time: automatic versions and other people's arrive while the panel is closed.
    if (this.detail.hidden) this.reload()
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
    this.versions.clear()
    this.loaded = true
    await this.load(this.url)
  }

  async load (url) {
    this.setError('')
    this.more.hidden = true
    this.root.setAttribute('aria-busy', 'true')
    try {
      const page = await api(url)
      for (const version of page.results) {
        this.versions.set(version.id, version)
        this.list.append(this.item(version))
      }
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
    button.className = version.automatic ? 'version version-auto' : 'version'
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
    meta.append(`${byline(version)} · `, time)
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
      this.versions.set(version.id, version)
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
        `${byline(version)} · ${absolute.format(created)}`
      this.detail.querySelector('[data-history=text]').innerHTML =
        renderMarkdown(version.text || '') || '<p class="preview-empty">This version is empty.</p>'
      this.fillAgainst(version)
      this.askRestore(false)
      this.browse.hidden = true
      this.detail.hidden = false
      this.showView(this.view)
      this.detail.querySelector('[data-history=back]').focus()
    } catch (error) {
      this.setError(error.message)
    }
  }

  showList () {
    this.detail.hidden = true
    this.browse.hidden = false
  }

  /** "Text" (the version rendered) or "Changes" (its diff with the chosen other text). */
  showView (view) {
    this.view = view
    for (const button of this.detail.querySelectorAll('[data-history-view]')) {
      button.setAttribute('aria-pressed', String(button.dataset.historyView === view))
    }
    this.detail.querySelector('[data-history=text]').hidden = view !== 'text'
    this.detail.querySelector('[data-history=changes]').hidden = view !== 'changes'
    if (view === 'changes') this.loadDiff()
  }

  /** The texts the shown version can be compared with: the current one, and every other
   * version listed so far. */
  fillAgainst (version) {
    const options = [new Option('the current text', 'current')]
    for (const other of this.versions.values()) {
      if (other.id === version.id) continue
      const label = `${other.name || 'Untitled version'} · ${absolute.format(new Date(other.created_at))}`
      options.push(new Option(label, String(other.id)))
    }
    this.against.replaceChildren(...options)
  }

  /** Asks the server for the diff, always from the older text to the newer one, so that "+"
   * means "added since". */
  async loadDiff () {
    const version = this.current
    const choice = this.against.value
    let from = version.id
    let against = choice
    let older = version
    let newer = null
    if (choice !== 'current') {
      const other = this.versions.get(Number(choice))
      if (other && new Date(other.created_at) < new Date(version.created_at)) {
        from = other.id
        against = String(version.id)
        older = other
        newer = version
      } else {
        newer = other
      }
    }
    const request = ++this.diffRequest
    const output = this.detail.querySelector('[data-history=diff]')
    const summary = this.detail.querySelector('[data-history=diff-summary]')
    summary.textContent = 'Comparing…'
    try {
      const result = await api(`${this.url}${from}/diff/?against=${encodeURIComponent(against)}`)
      if (request !== this.diffRequest) return // a later choice is on its way
      const toName = newer ? `“${newer.name || 'Untitled version'}”` : 'the current text'
      const fromName = `“${older.name || 'Untitled version'}”`
      summary.textContent = result.diff
        ? `From ${fromName} to ${toName}: ${result.added} line${result.added === 1 ? '' : 's'} added, ${result.removed} removed.`
        : `No differences between ${fromName} and ${toName}.`
      renderDiff(output, result.diff)
    } catch (error) {
      if (request !== this.diffRequest) return
      summary.textContent = ''
      output.replaceChildren()
      this.setError(error.message)
    }
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
      const result = await api(`${this.url}${version.id}/restore/`, { method: 'POST', body: {} })
      this.toast(result.before_restore
        ? `Restored “${version.name || 'Untitled version'}” for everyone. The text before it is kept as a version.`
        : `Restored “${version.name || 'Untitled version'}” for everyone`)
      this.showList()
      this.reload() // shows the version the server kept of the text before the restore
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

/** Who a version is by, as the list and the detail say it. */
function byline (version) {
  if (version.automatic) return 'automatic'
  return version.author ? version.author.username : 'a former member'
}

/** Shows a unified diff as lines of text, each marked by what it is (+ added, - removed, @@ a
 * new place in the text). Left out: its two header lines (the summary names both texts) and
 * "\\ No newline at end of file", which means nothing to a writer. Every line goes in as text,
 * never as HTML. */
export function renderDiff (element, diff) {
  const lines = diff.split('\n').slice(2).filter((line) => line && !line.startsWith('\\'))
  const kinds = { '+': 'diff-add', '-': 'diff-del', '@': 'diff-hunk' }
  element.replaceChildren(...lines.map((line) => {
    const span = document.createElement('span')
    span.className = `diff-line ${kinds[line[0]] || 'diff-context'}`
    span.textContent = `${line}\n`
    return span
  }))
  element.hidden = !diff
}
