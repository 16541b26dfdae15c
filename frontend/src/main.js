// The document page (templates/editor/document_detail.html): CodeMirror 6 bound to the shared
// Y.Text "codemirror", kept in IndexedDB for offline work and synced through CollabProvider.
// See docs/frontend.md for the layout of this code and how the bundle is built.

import './editor.css'

import { defaultKeymap, indentWithTab } from '@codemirror/commands'
import { markdown, markdownLanguage } from '@codemirror/lang-markdown'
import { HighlightStyle, syntaxHighlighting } from '@codemirror/language'
import { highlightSelectionMatches, searchKeymap } from '@codemirror/search'
import { EditorSelection, EditorState } from '@codemirror/state'
import { drawSelection, EditorView, keymap, placeholder } from '@codemirror/view'
import { tags } from '@lezer/highlight'
import { yCollab, yUndoManagerKeymap } from 'y-codemirror.next'
import { IndexeddbPersistence } from 'y-indexeddb'
import { Awareness } from 'y-protocols/awareness'
import * as Y from 'yjs'

import { HistoryPanel } from './history.js'
import { bindPresence } from './presence.js'
import { bindPreview } from './preview.js'
import { CollabProvider } from './provider.js'
import { bindTitle } from './title.js'

const PALETTE = ['#d1495b', '#e07a1f', '#c59a00', '#5a9e3a', '#1f9e89', '#2a7ab8', '#4b5bd6', '#8a4fd1', '#c2448f', '#6d7a88']

/** A colour per user id, the same on every device; the server's identity wins when given. */
export function colorFor (userId) {
  let hash = 0
  for (const char of String(userId)) hash = (hash * 31 + char.charCodeAt(0)) >>> 0
  return PALETTE[hash % PALETTE.length]
}

function start (app) {
  const config = {
    documentId: app.dataset.documentId,
    canEdit: app.dataset.canEdit === 'true',
    apiBase: app.dataset.apiBase,
    loginUrl: app.dataset.loginUrl,
  }
  const identityScript = document.getElementById('collab-identity')
  const identity = identityScript ? JSON.parse(identityScript.textContent) : {}
  const color = identity.color || colorFor(identity.id)
  const user = { id: identity.id, name: identity.name || 'Anonymous', color, colorLight: identity.colorLight || color + '33' }

  const toast = makeToast(document.getElementById('toast'))

  // -- the shared document --------------------------------------------------------------------
  const ydoc = new Y.Doc()
  const ytext = ydoc.getText('codemirror')
  const awareness = new Awareness(ydoc)
  awareness.setLocalStateField('user', user)
  const undoManager = new Y.UndoManager(ytext)

  // Offline first: what this browser kept shows at once; the server's part merges in when the
  // socket syncs. Edits made offline live here until a connection carries them to the server.
  const persistence = new IndexeddbPersistence(`collab-doc-${config.documentId}`, ydoc)
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws'
  const provider = new CollabProvider(`${scheme}://${location.host}/ws/documents/${config.documentId}`, ydoc, { awareness })

  // -- the editor ------------------------------------------------------------------------------
  const host = document.getElementById('editor')
  host.replaceChildren()
  const view = new EditorView({
    parent: host,
    state: EditorState.create({
      doc: ytext.toString(),
      extensions: [
        keymap.of([
          ...markdownKeymap(config.canEdit),
          ...yUndoManagerKeymap,
          ...searchKeymap,
          ...defaultKeymap,
          indentWithTab,
        ]),
        drawSelection(),
        highlightSelectionMatches(),
        EditorView.lineWrapping,
        markdown({ base: markdownLanguage }),
        syntaxHighlighting(markdownHighlight),
        placeholder(config.canEdit ? 'Start writing… Markdown works: # heading, **bold**, - list' : 'This document is empty.'),
        EditorState.readOnly.of(!config.canEdit),
        EditorView.editable.of(config.canEdit),
        EditorView.contentAttributes.of({ 'aria-label': 'Document text (Markdown)', spellcheck: 'true' }),
        yCollab(ytext, awareness, { undoManager }),
      ],
    }),
  })
  app.classList.add('is-ready')

  persistence.once('synced', () => app.classList.add('is-local-loaded'))
  provider.on('synced', (synced) => app.classList.toggle('is-synced', synced))

  bindPreview(ytext, document.getElementById('preview'))
  bindPresence(awareness, document.getElementById('presence'))
  bindStatus(provider, document.getElementById('status'), document.getElementById('doc-notice'), config)
  bindTitle(document.getElementById('title-form'), { toast })

  const history = new HistoryPanel(document.getElementById('history'), { apiBase: config.apiBase, canEdit: config.canEdit, toast })
  document.getElementById('history-toggle').addEventListener('click', () => history.toggle())
  document.getElementById('history').querySelector('[data-history=close]').addEventListener('click', () => history.close())
  document.addEventListener('collab:layout', () => {
    document.getElementById('history-toggle').setAttribute('aria-pressed', String(history.isOpen))
  })

  const modes = bindModes(document.getElementById('workspace'), document.getElementById('mode'))
  const help = bindPopover(document.getElementById('help-toggle'), document.getElementById('help'))
  bindShortcuts({ history, modes, help, view, canEdit: config.canEdit })

  // A handle for debugging and for the browser tests; nothing in the page depends on it.
  window.collab = { Y, doc: ydoc, text: ytext, awareness, provider, persistence, view, undoManager }
}

// -- Markdown niceties ---------------------------------------------------------------------------

const markdownHighlight = HighlightStyle.define([
  { tag: tags.heading1, fontWeight: '700', fontSize: '1.3em' },
  { tag: tags.heading2, fontWeight: '700', fontSize: '1.15em' },
  { tag: [tags.heading3, tags.heading4, tags.heading5, tags.heading6], fontWeight: '700' },
  { tag: tags.strong, fontWeight: '700' },
  { tag: tags.emphasis, fontStyle: 'italic' },
  { tag: tags.strikethrough, textDecoration: 'line-through' },
  { tag: [tags.link, tags.url], color: 'var(--accent)' },
  { tag: tags.monospace, fontFamily: 'var(--mono)', background: 'rgba(135,131,120,.12)', borderRadius: '3px' },
  { tag: tags.quote, color: 'var(--muted)', fontStyle: 'italic' },
  { tag: [tags.processingInstruction, tags.meta, tags.contentSeparator], color: '#9aa1a9' },
  { tag: tags.list, color: 'var(--text)' },
])

/** Wraps the selection in `before`/`after` (or inserts them around the cursor). */
function wrap (before, after = before) {
  return (view) => {
    if (view.state.readOnly) return false
    view.dispatch(view.state.changeByRange((range) => {
      const text = view.state.sliceDoc(range.from, range.to)
      if (text.startsWith(before) && text.endsWith(after) && text.length >= before.length + after.length) {
        const inner = text.slice(before.length, text.length - after.length)
        return { changes: { from: range.from, to: range.to, insert: inner }, range: EditorSelection.range(range.from, range.from + inner.length) }
      }
      return {
        changes: [{ from: range.from, insert: before }, { from: range.to, insert: after }],
        range: EditorSelection.range(range.from + before.length, range.to + before.length),
      }
    }))
    return true
  }
}

function markdownKeymap (canEdit) {
  if (!canEdit) return []
  return [
    { key: 'Mod-b', run: wrap('**') },
    { key: 'Mod-i', run: wrap('_') },
    { key: 'Mod-k', run: wrap('[', '](https://)') },
  ]
}

// -- connection status -----------------------------------------------------------------------------

function bindStatus (provider, element, notice, config) {
  const text = element.querySelector('.status-text')
  const retry = element.querySelector('.status-retry')
  let ticker = null
  retry.addEventListener('click', () => provider.retryNow())

  const showNotice = (html) => {
    notice.innerHTML = html
    notice.hidden = !html
  }

  const render = () => {
    const { status, retryAt, code } = provider.status
    let label
    let state = status
    switch (status) {
      case 'connecting':
        label = 'Connecting…'
        break
      case 'connected':
        label = provider.synced ? 'Connected' : 'Syncing…'
        if (!provider.synced) state = 'connecting'
        break
      case 'reconnecting': {
        const seconds = Math.ceil((retryAt - Date.now()) / 1000)
        label = seconds >= 1 ? `Reconnecting in ${seconds} s` : 'Reconnecting…'
        break
      }
      case 'offline':
        label = 'Offline'
        break
      case 'denied':
        label = code === 4401 ? 'Signed out' : 'No access'
        break
      default:
        label = status
    }
    element.dataset.state = state
    text.textContent = label
    element.title = status === 'offline'
      ? 'Offline: your changes are kept in this browser and sent when the connection returns.'
      : label
    retry.hidden = status !== 'reconnecting'
    clearInterval(ticker)
    ticker = status === 'reconnecting' ? setInterval(render, 250) : null
    if (status === 'denied') {
      const login = `${config.loginUrl}?next=${encodeURIComponent(location.pathname)}`
      showNotice(code === 4401
        ? `Your session expired — <a href="${login}">log in again</a>. Your changes are kept in this browser.`
        : code === 4403
          ? 'You no longer have access to this document. Ask its owner to share it with you again.'
          : 'This document cannot be reached. It may have been deleted.')
    } else if (status === 'offline') {
      showNotice('')
      app.classList.add('is-offline')
    } else {
      showNotice('')
      app.classList.remove('is-offline')
    }
  }
  const app = element.closest('.doc-app')
  provider.on('status', render)
  provider.on('synced', render)
  render()
}

// -- layout: write / split / preview -----------------------------------------------------------

function bindModes (workspace, control) {
  const stored = localStorage.getItem('collab:mode')
  const set = (mode) => {
    workspace.dataset.mode = mode
    for (const button of control.querySelectorAll('[data-mode]')) {
      button.setAttribute('aria-pressed', String(button.dataset.mode === mode))
    }
    try { localStorage.setItem('collab:mode', mode) } catch (_) {}
  }
  control.addEventListener('click', (event) => {
    const button = event.target.closest('[data-mode]')
    if (button) set(button.dataset.mode)
  })
  set(['edit', 'split', 'preview'].includes(stored) ? stored : 'split')
  const narrow = () => window.matchMedia('(max-width: 820px)').matches
  return {
    cycle () {
      const order = narrow() ? ['edit', 'preview'] : ['edit', 'split', 'preview']
      const current = workspace.dataset.mode === 'split' && narrow() ? 'edit' : workspace.dataset.mode
      set(order[(order.indexOf(current) + 1) % order.length])
    },
  }
}

function bindPopover (toggle, popover) {
  const api = {
    open () { popover.hidden = false; toggle.setAttribute('aria-expanded', 'true') },
    close () { popover.hidden = true; toggle.setAttribute('aria-expanded', 'false') },
    toggle () { popover.hidden ? api.open() : api.close() },
    get isOpen () { return !popover.hidden },
  }
  toggle.addEventListener('click', (event) => { event.stopPropagation(); api.toggle() })
  document.addEventListener('click', (event) => {
    if (api.isOpen && !popover.contains(event.target)) api.close()
  })
  return api
}

function bindShortcuts ({ history, modes, help, view, canEdit }) {
  document.addEventListener('keydown', (event) => {
    const mod = event.ctrlKey || event.metaKey
    const key = event.key.toLowerCase()
    const typing = event.target.closest('input, textarea, [contenteditable=true]')
    if (mod && !event.shiftKey && !event.altKey && key === 's') {
      event.preventDefault() // never the browser's "save page"
      if (canEdit) history.startSave()
    } else if (mod && event.shiftKey && key === 'h') {
      event.preventDefault()
      history.toggle()
    } else if (mod && event.altKey && (key === 'p' || event.code === 'KeyP')) {
      event.preventDefault()
      modes.cycle()
    } else if (event.key === 'Escape') {
      if (help.isOpen) help.close()
      else if (history.isOpen) { history.close(); view.focus() }
    } else if (event.key === '?' && !typing) {
      event.preventDefault()
      help.toggle()
    } else if (event.key === 'e' && !mod && !typing && !event.altKey) {
      event.preventDefault()
      view.focus()
    }
  })
}

function makeToast (element) {
  let timer = null
  return (message, kind = 'info') => {
    element.textContent = message
    element.dataset.kind = kind
    element.hidden = false
    clearTimeout(timer)
    timer = setTimeout(() => { element.hidden = true }, 3500)
  }
}

// Last, once every module-level constant above is initialised.
const root = document.getElementById('doc-app')
if (root) start(root)
