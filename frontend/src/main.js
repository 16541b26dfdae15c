// The document page (templates/editor/document_detail.html): CodeMirror 6 bound to the shared
// Y.Text "codemirror", kept in IndexedDB for offline work and synced through CollabProvider.
// See docs/frontend.md for the layout of this code and how the bundle is built.

import './editor.css'

import { defaultKeymap, indentWithTab } from '@codemirror/commands'
import { deleteMarkupBackward, insertNewlineContinueMarkup, markdown, markdownLanguage } from '@codemirror/lang-markdown'
import { HighlightStyle, syntaxHighlighting, syntaxTreeAvailable } from '@codemirror/language'
import { languages } from '@codemirror/language-data'
import { highlightSelectionMatches, searchKeymap } from '@codemirror/search'
import { Compartment, EditorSelection, EditorState } from '@codemirror/state'
import { drawSelection, EditorView, keymap, placeholder } from '@codemirror/view'
import { tags } from '@lezer/highlight'
import { yCollab, yUndoManagerKeymap } from 'y-codemirror.next'
import { IndexeddbPersistence } from 'y-indexeddb'
import { Awareness } from 'y-protocols/awareness'
import * as Y from 'yjs'

import { bindExport } from './export.js'
import { showCounts } from './counts.js'
import { HistoryPanel } from './history.js'
import { imageUploads } from './images.js'
import { keepForOffline } from './offline.js'
import { bindPresence } from './presence.js'
import { livePreview, renderMarkdown } from './preview.js'
import { scrollTogether } from './scrollsync.js'
import { CollabProvider, tooLargeMessage } from './provider.js'
import { bindTitle } from './title.js'
import { characters, unsavedInserts } from './unsaved.js'

function start (app) {
  const config = {
    documentId: app.dataset.documentId,
    canEdit: app.dataset.canEdit === 'true',
    role: app.dataset.role,
    // The server's frame limit: no message larger than this is sent (0: unknown, no check).
    maxMessageBytes: Number(app.dataset.maxMessageBytes) || 0,
    // The server's MAX_IMAGE_BYTES: larger images are refused before they are sent.
    maxImageBytes: Number(app.dataset.maxImageBytes) || 0,
    apiBase: app.dataset.apiBase,
    loginUrl: app.dataset.loginUrl,
  }
  // Who this user is, as the server writes it into every awareness state (id, name, colour:
  // editor.realtime.presence.identity, rendered into the page). The browser computes no colour
  // of its own, so one's own cursor and avatar look the same before and after the socket
  // connects, and the same as everyone else sees them.
  const user = JSON.parse(document.getElementById('collab-identity').textContent)
  // The account menu's avatar too: one colour per person on this page.
  const own = document.querySelector('.topbar .avatar')
  if (own) own.style.background = user.color

  const toast = makeToast(document.getElementById('toast'))

  // -- the shared document --------------------------------------------------------------------
  const ydoc = new Y.Doc()
  const ytext = ydoc.getText('codemirror')
  const awareness = new Awareness(ydoc)
  awareness.setLocalStateField('user', user)
  const undoManager = new Y.UndoManager(ytext)

  // Offline first: what this browser kept shows at once; the server's part merges in when the
  // socket syncs. Edits made offline live here until a connection carries them to the server.
  const storeName = `collab-doc-${config.documentId}`
  const persistence = new IndexeddbPersistence(storeName, ydoc)
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws'
  const provider = new CollabProvider(`${scheme}://${location.host}/ws/documents/${config.documentId}`, ydoc, {
    awareness,
    readOnly: !config.canEdit,
    maxMessageBytes: config.maxMessageBytes,
  })

  // What this page may do now. The role can change while the page is open (the server says so
  // on the socket); `stuck` is set when a change was too large to save: nothing more from this
  // page can be saved, so nothing more can be typed.
  const access = { canEdit: config.canEdit, role: config.role, stuck: false }
  const writable = () => access.canEdit && !access.stuck
  const editability = new Compartment()

  // -- the editor ------------------------------------------------------------------------------
  const host = document.getElementById('editor')
  host.replaceChildren()
  const preview = livePreview(document.getElementById('preview'))
  const view = new EditorView({
    parent: host,
    state: EditorState.create({
      doc: ytext.toString(),
      extensions: [
        editability.of(editabilityExtensions(access)),
        tooLargeInputFilter(provider, (message) => notice.show({ kind: 'refused', message })),
        imageUploads({ apiBase: config.apiBase, maxBytes: config.maxImageBytes, writable, toast }),
        keymap.of([
          ...searchKeymap,
          ...defaultKeymap,
          indentWithTab,
        ]),
        drawSelection(),
        highlightSelectionMatches(),
        EditorView.lineWrapping,
        // Its keymap (Enter continues a list or quote, Backspace takes markup back) is in
        // markdownKeymap, active only while the page may edit: it would change a read-only text.
        // Fenced code is highlighted in its language (```python …): each language's parser
        // is loaded from its own file the first time a fence names it.
        markdown({ base: markdownLanguage, codeLanguages: languages, addKeymap: false }),
        syntaxHighlighting(markdownHighlight),
        EditorView.contentAttributes.of({ 'aria-label': 'Document text (Markdown)', spellcheck: 'true' }),
        yCollab(ytext, awareness, { undoManager }),
        preview,
        showCounts(document.getElementById('doc-counts')),
      ],
    }),
  })
  app.classList.add('is-ready')

  const notice = makeChangeNotice(document.getElementById('change-notice'), {
    toast,
    discard: () => discardLocalChanges(provider, persistence, storeName),
  })
  const unsavedNow = (basis = provider.serverStateVector) => basis ? unsavedInserts(ytext, basis) : undefined
  const applyAccess = () => {
    view.dispatch({ effects: editability.reconfigure(editabilityExtensions(access)) })
    app.dataset.canEdit = String(access.canEdit)
    app.dataset.role = access.role
    const badge = document.getElementById('role-badge')
    badge.className = `badge role-${access.role}`
    badge.textContent = access.canEdit ? access.role : 'view only'
    const title = document.getElementById('doc-title')
    if (title) title.disabled = !access.canEdit
    history.canEdit = writable()
  }

  persistence.once('synced', () => app.classList.add('is-local-loaded'))
  provider.on('synced', (synced) => app.classList.toggle('is-synced', synced))
  // Kept by the service worker, this page reloads with no network (its text from IndexedDB).
  keepForOffline(app.dataset.serviceWorker, location.pathname)
    .then((kept) => { app.dataset.offline = kept ? 'kept' : 'unavailable' })

  bindExport(document.getElementById('export-menu'))
  bindPresence(awareness, document.getElementById('presence'))
  bindStatus(provider, document.getElementById('status'), document.getElementById('doc-notice'), config)

  // The role changed on the open socket (an owner changed this person's membership).
  provider.on('scope', ({ readOnly, stateVectorCurrent }) => {
    if (access.canEdit === !readOnly) return
    access.canEdit = !readOnly
    // The page knows the role it was rendered with; the socket tells only what may be done.
    access.role = readOnly ? 'viewer' : (config.canEdit ? config.role : 'editor')
    applyAccess()
    modes.roleChanged(access.canEdit)
    if (readOnly) {
      // What the server lacks is known from its state vector: the one we hold if this came on
      // connect, else the fresh step 1 that follows ("server-state" below).
      notice.show({
        kind: 'role',
        message: 'Your role changed to viewer: this document is now view only.',
        unsaved: stateVectorCurrent ? unsavedNow() : null,
      })
    } else {
      notice.hide('role')
      notice.hide('unsaved')
      toast('Your role changed to editor: you can edit this document again.')
    }
  })
  provider.on('server-state', (stateVector) => {
    if (access.canEdit || access.stuck) return
    const unsaved = unsavedInserts(ytext, stateVector)
    if (notice.kind === 'role' || notice.kind === 'unsaved') notice.setUnsaved(unsaved)
    else if (unsaved.length) {
      notice.show({ kind: 'unsaved', message: 'You can only view this document: changes made in this browser were not saved.', unsaved })
    }
  })
  // A change too large to save: the server refused it (4413) or we did not send it.
  provider.on('status', ({ status, reason }) => {
    if (status !== 'too-large' || access.stuck) return
    access.stuck = true
    applyAccess()
    notice.show({
      kind: 'too-large',
      message: `${sentence(reason)} Your text is still here, but nothing more from this page can be saved: copy what was not saved, or discard it and reload to go on with the saved document.`,
      unsaved: unsavedNow(provider.unsavedBasis),
      dismissable: false,
    })
  })
  const title = bindTitle(document.getElementById('title-form'), { heading: document.getElementById('doc-heading'), toast })
  // What the server says outside the document: a rename made anywhere.
  provider.on('stateless', (payload) => {
    let message = null
    try { message = JSON.parse(payload) } catch (_) { return }
    if (message && message.type === 'title') title.show(message.title)
  })
  const copyLink = document.getElementById('copy-link')
  copyLink.addEventListener('click', async () => {
    if (await copyText(copyLink.dataset.url)) toast('Link copied. It opens this document for people who have access.')
    else toast('Could not copy the link: copy it from the address bar.', 'error')
  })

  const history = new HistoryPanel(document.getElementById('history'), { apiBase: config.apiBase, canEdit: config.canEdit, toast })
  document.getElementById('history-toggle').addEventListener('click', () => history.toggle())
  document.getElementById('history').querySelector('[data-history=close]').addEventListener('click', () => history.close())
  document.addEventListener('collab:layout', () => {
    document.getElementById('history-toggle').setAttribute('aria-pressed', String(history.isOpen))
  })

  const workspace = document.getElementById('workspace')
  const modes = bindModes(workspace, document.getElementById('mode'), config.canEdit)
  const scrolling = scrollTogether({
    view,
    preview: view.plugin(preview),
    pane: document.querySelector('.preview-pane'),
    active: () => workspace.dataset.mode === 'split' && view.plugin(preview).visible && view.scrollDOM.clientHeight > 0,
  })
  const help = bindPopover(document.getElementById('help-toggle'), document.getElementById('help'))
  bindShortcuts({ history, modes, help, view, canEdit: writable })
  applyAccess()

  // A handle for debugging and for the browser tests; nothing in the page depends on it.
  window.collab = {
    Y,
    doc: ydoc,
    text: ytext,
    awareness,
    provider,
    persistence,
    view,
    undoManager,
    access,
    preview: view.plugin(preview),
    scrolling,
    renderMarkdown,
    // Whether the editor has parsed the whole text (highlighting), for bench/browser_typing.py.
    parsed: () => syntaxTreeAvailable(view.state),
  }
}

/** What the editor allows: typing, the Markdown and undo shortcuts only when writable. */
function editabilityExtensions ({ canEdit, stuck }) {
  const writable = canEdit && !stuck
  return [
    EditorState.readOnly.of(!writable),
    // Still editable when stuck, so that the whole text can be selected and copied.
    EditorView.editable.of(canEdit),
    placeholder(canEdit ? 'Start writing… Markdown works: # heading, **bold**, - list' : 'This document is empty.'),
    keymap.of(writable ? [...markdownKeymap(true), ...yUndoManagerKeymap] : []),
    // y-codemirror.next undoes on the browser's own "undo" input too; not while read-only.
    EditorView.domEventHandlers({
      beforeinput (event) {
        if (writable || !event.inputType.startsWith('history')) return false
        event.preventDefault()
        return true
      },
    }),
  ]
}

/**
 * Refuses typing, pasting or dropping more text than one message to the server may carry: the
 * document is left as it was (the text stays in the clipboard) rather than taking a change that
 * could never be saved. The provider checks what it sends anyway (offline changes add up).
 */
function tooLargeInputFilter (provider, refuse) {
  return EditorState.transactionFilter.of((tr) => {
    const limit = provider.maxMessageBytes
    if (!limit || !tr.docChanged || !tr.isUserEvent('input')) return tr
    let bytes = 64 // about what a Yjs update and its framing add to the text
    tr.changes.iterChanges((fromA, toA, fromB, toB, inserted) => {
      for (const line of inserted.iterLines()) bytes += utf8Length(line) + 1
    })
    if (bytes <= limit) return tr
    refuse(`${sentence(tooLargeMessage(bytes, limit))} Nothing was inserted; the document is unchanged.`)
    return []
  })
}

function utf8Length (text) {
  let bytes = 0
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i)
    if (code < 0x80) bytes += 1
    else if (code < 0x800) bytes += 2
    else if (code >= 0xd800 && code <= 0xdbff) { bytes += 4; i++ } else bytes += 3
  }
  return bytes
}

/** "this change is too large…" → "This change is too large…." */
function sentence (text) {
  const trimmed = String(text || '').trim()
  if (!trimmed) return ''
  const capital = trimmed[0].toUpperCase() + trimmed.slice(1)
  return /[.!?]$/.test(capital) ? capital : `${capital}.`
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
  // Inside fenced code, in its language: the same colours as the preview's (editor.css).
  { tag: [tags.keyword, tags.controlKeyword, tags.operatorKeyword, tags.definitionKeyword, tags.moduleKeyword, tags.bool, tags.null], color: 'var(--code-keyword)' },
  { tag: [tags.string, tags.special(tags.string), tags.regexp], color: 'var(--code-string)' },
  { tag: [tags.number, tags.integer, tags.float], color: 'var(--code-number)' },
  { tag: [tags.comment, tags.lineComment, tags.blockComment], color: 'var(--code-comment)', fontStyle: 'italic' },
  { tag: [tags.function(tags.variableName), tags.function(tags.definition(tags.variableName)), tags.definition(tags.function(tags.variableName))], color: 'var(--code-title)' },
  { tag: [tags.typeName, tags.className, tags.namespace], color: 'var(--code-type)' },
  { tag: [tags.propertyName, tags.attributeName, tags.tagName], color: 'var(--code-attr)' },
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
    // Enter continues a list, a task list or a quote (an empty item ends it) and keeps the
    // indentation inside code; the fences around it stay as they are.
    { key: 'Enter', run: insertNewlineContinueMarkup },
    { key: 'Backspace', run: deleteMarkupBackward },
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
    const { status, retryAt, code, reason } = provider.status
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
        const why = code === 1013 ? 'Server busy — r' : code === 4429 ? 'Too fast — r' : 'R'
        label = seconds >= 1 ? `${why}econnecting in ${seconds} s` : `${why}econnecting…`
        break
      }
      case 'offline':
        label = 'Offline'
        break
      case 'denied':
        label = code === 4401 ? 'Signed out' : 'No access'
        break
      case 'too-large':
        label = 'Not saved'
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
      // The server says why a session ended (docs/protocol.md): a logout in another tab, or a
      // new password; anything else is an expired session.
      const ended = reason.startsWith('logged out')
        ? 'You logged out'
        : reason.startsWith('password changed') ? 'Your password was changed' : 'Your session expired'
      showNotice(code === 4401
        ? `${ended} — <a href="${login}">log in again</a>. Your changes are kept in this browser.`
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

/**
 * The layout. Viewers land on the rendered preview, people who may edit on the split view;
 * the last layout each chose is remembered apart (a viewer's "Split" does not become the
 * writing layout of their own documents).
 */
function bindModes (workspace, control, canEdit) {
  const keyOf = (editing) => editing ? 'collab:mode' : 'collab:mode:viewer'
  const stored = (editing) => {
    let mode = null
    try { mode = localStorage.getItem(keyOf(editing)) } catch (_) {}
    return ['edit', 'split', 'preview'].includes(mode) ? mode : (editing ? 'split' : 'preview')
  }
  let editing = canEdit
  const set = (mode) => {
    workspace.dataset.mode = mode
    for (const button of control.querySelectorAll('[data-mode]')) {
      button.setAttribute('aria-pressed', String(button.dataset.mode === mode))
    }
    try { localStorage.setItem(keyOf(editing), mode) } catch (_) {}
  }
  control.addEventListener('click', (event) => {
    const button = event.target.closest('[data-mode]')
    if (button) set(button.dataset.mode)
  })
  set(stored(editing))
  const narrow = () => window.matchMedia('(max-width: 820px)').matches
  return {
    cycle () {
      const order = narrow() ? ['edit', 'preview'] : ['edit', 'split', 'preview']
      const current = workspace.dataset.mode === 'split' && narrow() ? 'edit' : workspace.dataset.mode
      set(order[(order.indexOf(current) + 1) % order.length])
    },
    /** The role changed on the open page: someone who may now edit gets the editor back. */
    roleChanged (canEditNow) {
      if (canEditNow === editing) return
      editing = canEditNow
      if (editing && workspace.dataset.mode === 'preview') set(stored(true))
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
  // canEdit: a function, the role can change while the page is open.
  document.addEventListener('keydown', (event) => {
    const mod = event.ctrlKey || event.metaKey
    const key = event.key.toLowerCase()
    const typing = event.target.closest('input, textarea, [contenteditable=true]')
    if (mod && !event.shiftKey && !event.altKey && key === 's') {
      event.preventDefault() // never the browser's "save page"
      if (canEdit()) history.startSave()
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

// -- changes that could not be saved ---------------------------------------------------------------

/**
 * The notice under the document bar (#change-notice) for a role change, a change too large to
 * save, or text in this browser that the server does not have: a message, the unsaved inserts
 * (a few snippets), "Copy unsaved text" and "Discard … and reload".
 */
function makeChangeNotice (element, { toast, discard }) {
  const part = (name) => element.querySelector(`[data-notice=${name}]`)
  const message = part('message')
  const details = part('unsaved')
  const summary = part('summary')
  const list = part('snippets')
  const copy = part('copy')
  const discardButton = part('discard')
  const dismiss = part('dismiss')
  let unsavedText = ''

  copy.addEventListener('click', async () => {
    if (await copyText(unsavedText)) toast(`Copied ${characters(unsavedText.length)} to the clipboard`)
    else toast('Could not copy: select the text in the editor and copy it from there.', 'error')
  })
  discardButton.addEventListener('click', () => {
    discardButton.disabled = true
    discardButton.textContent = 'Discarding…'
    discard()
  })
  dismiss.addEventListener('click', () => api.hide())

  const api = {
    kind: null,
    /** unsaved: a list of texts; [] for "nothing lost"; null while not known; undefined: none. */
    show ({ kind, message: text, unsaved, dismissable = true }) {
      api.kind = kind
      element.dataset.kind = kind
      message.textContent = text
      dismiss.hidden = !dismissable
      api.setUnsaved(unsaved)
      element.hidden = false
    },
    setUnsaved (unsaved) {
      unsavedText = (unsaved || []).join('\n\n')
      copy.hidden = !unsavedText
      discardButton.hidden = !unsavedText
      discardButton.textContent = api.kind === 'too-large' ? 'Discard unsaved changes and reload' : 'Discard them and reload'
      list.replaceChildren()
      details.hidden = unsaved === undefined
      if (unsaved === undefined) return
      if (unsaved === null) {
        summary.textContent = 'Checking which of your changes were saved…'
      } else if (!unsaved.length) {
        summary.textContent = 'Nothing you typed was lost: everything was saved.'
      } else {
        const total = unsaved.reduce((sum, text) => sum + text.length, 0)
        summary.textContent = `Not saved (${characters(total)}, kept in this browser only):`
        for (const text of unsaved.slice(0, 5)) {
          const item = document.createElement('li')
          item.textContent = text.length > 200 ? `${text.slice(0, 200)}…` : text
          list.append(item)
        }
        if (unsaved.length > 5) {
          const more = document.createElement('li')
          more.className = 'unsaved-more'
          more.textContent = `and ${unsaved.length - 5} more`
          list.append(more)
        }
      }
    },
    /** Hides the notice (only if it is of `kind`, when given). */
    hide (kind) {
      if (kind && api.kind !== kind) return
      api.kind = null
      element.hidden = true
    },
  }
  return api
}

async function copyText (text) {
  try {
    await navigator.clipboard.writeText(text)
    return true
  } catch (_) {
    const area = document.createElement('textarea')
    area.value = text
    area.setAttribute('readonly', '')
    area.style.position = 'fixed'
    area.style.opacity = '0'
    document.body.append(area)
    area.select()
    let copied = false
    try { copied = document.execCommand('copy') } catch (_) {}
    area.remove()
    return copied
  }
}

/**
 * Forgets what this browser holds of the document (its IndexedDB store) and reloads: the page
 * comes back with the server's text. Unsaved changes are lost; the notice offers to copy them
 * first. Another tab of the same document in this browser keeps its own copy until it closes.
 */
async function discardLocalChanges (provider, persistence, name) {
  provider.destroy() // nothing more goes to the server
  try { await persistence.destroy() } catch (_) {}
  await new Promise((resolve) => {
    const request = indexedDB.deleteDatabase(name)
    request.onsuccess = request.onerror = request.onblocked = () => resolve()
  })
  location.reload()
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
