// The Markdown preview. Whatever a co-author types is untrusted: markdown-it runs with raw HTML
// off (it is shown as text) and refuses javascript:/vbscript:/data: links, and the HTML it
// produces is sanitised again by DOMPurify before it reaches the page. Either layer alone
// should be enough; both together survive a bug in one of them.
//
// The live preview renders incrementally, so that a 2 MB document types as fast as a small one
// (bench/browser_typing.py, docs/BENCHMARKS.md): the text is cut into top-level chunks at
// places where Markdown cannot carry state from one block to the next (`chunkStarts`), each
// chunk is rendered into an element of its own, and a change re-cuts and re-renders only the
// chunks it touched. Work that remains (a whole document on load, a fence opened above a long
// text) is done in slices of a few milliseconds per frame, nearest the change first, and none
// of it while the preview is hidden (the "Write" layout, a narrow screen, a background tab).

import { ViewPlugin } from '@codemirror/view'
import DOMPurify from 'dompurify'
import hljs from 'highlight.js/lib/core'
import bash from 'highlight.js/lib/languages/bash'
import c from 'highlight.js/lib/languages/c'
import cpp from 'highlight.js/lib/languages/cpp'
import css from 'highlight.js/lib/languages/css'
import diff from 'highlight.js/lib/languages/diff'
import go from 'highlight.js/lib/languages/go'
import java from 'highlight.js/lib/languages/java'
import javascript from 'highlight.js/lib/languages/javascript'
import json from 'highlight.js/lib/languages/json'
import markdown from 'highlight.js/lib/languages/markdown'
import python from 'highlight.js/lib/languages/python'
import rust from 'highlight.js/lib/languages/rust'
import sql from 'highlight.js/lib/languages/sql'
import typescript from 'highlight.js/lib/languages/typescript'
import xml from 'highlight.js/lib/languages/xml'
import yaml from 'highlight.js/lib/languages/yaml'
import MarkdownIt from 'markdown-it'

// Fenced code in a few common languages is highlighted (highlight.js, its aliases too: js, py,
// sh, html…). Its output, spans with hljs-* classes around escaped text, goes through DOMPurify
// with the rest. Longer blocks stay plain: highlighting is linear but not cheap.
for (const [name, language] of Object.entries({ bash, c, cpp, css, diff, go, java, javascript, json, markdown, python, rust, sql, typescript, xml, yaml })) {
  hljs.registerLanguage(name, language)
}
const HIGHLIGHT_MAX = 20000
function highlight (code, info) {
  const name = (info || '').trim().split(/\s+/)[0].toLowerCase()
  if (!name || code.length > HIGHLIGHT_MAX || !hljs.getLanguage(name)) return ''
  try {
    return hljs.highlight(code, { language: name, ignoreIllegals: true }).value
  } catch (_) {
    return ''
  }
}

const md = new MarkdownIt({ html: false, linkify: true, typographer: true, highlight })

// Task list items ("- [ ] to do", "- [x] done"): the list item is marked with data attributes
// (which line of the rendered source holds its box) and the "[ ]" taken out of its text. The
// checkbox itself is made after sanitising (`decorate`), as a DOM element: the sanitiser keeps
// refusing <input> in anything an author writes.
const TASK = /^\[([ xX])\](?=\s|$)\s?/
md.core.ruler.after('inline', 'task_items', (state) => {
  const tokens = state.tokens
  for (let i = 2; i < tokens.length; i++) {
    const inline = tokens[i]
    if (inline.type !== 'inline' || tokens[i - 1].type !== 'paragraph_open' || tokens[i - 2].type !== 'list_item_open') continue
    const first = inline.children[0]
    const match = first && first.type === 'text' ? TASK.exec(first.content) : null
    if (!match || !tokens[i - 1].map) continue
    first.content = first.content.slice(match[0].length)
    const item = tokens[i - 2]
    item.attrJoin('class', 'task-item')
    item.attrSet('data-task', match[1] === ' ' ? 'open' : 'done')
    item.attrSet('data-task-line', String(tokens[i - 1].map[0]))
  }
})
// The box in the source line of a task item: after any quote marks and the list marker.
const TASK_SOURCE = /^((?:[ \t]*>)*[ \t]*(?:(?:[-+*]|\d{1,9}[.)])[ \t]+)?)\[([ xX])\]/

/** Gives each task item of `root` its checkbox (disabled unless `editable`). */
function decorate (root, editable) {
  for (const item of root.querySelectorAll('li[data-task]')) {
    const box = document.createElement('input')
    box.type = 'checkbox'
    box.className = 'task-checkbox'
    if (item.dataset.task === 'done') box.setAttribute('checked', '')
    if (!editable) box.setAttribute('disabled', '')
    // Named by the item's own words, not those of a list nested in it.
    const own = [...item.childNodes].filter((node) => !['UL', 'OL'].includes(node.nodeName))
    const words = own.map((node) => node.textContent).join('').trim().replace(/\s+/g, ' ')
    box.setAttribute('aria-label', `${item.dataset.task === 'done' ? 'Done' : 'To do'}: ${words.slice(0, 80)}`)
    const first = item.firstElementChild
    ;(first && first.tagName === 'P' ? first : item).prepend(box)
  }
  return root
}

DOMPurify.addHook('afterSanitizeAttributes', (node) => {
  if (node.tagName === 'A' && node.hasAttribute('href')) {
    node.setAttribute('target', '_blank')
    node.setAttribute('rel', 'noopener noreferrer nofollow')
  }
  if (node.tagName === 'IMG') node.setAttribute('loading', 'lazy')
})

const SANITIZE = {
  USE_PROFILE: { html: true },
  FORBID_TAGS: ['style', 'form', 'input', 'button', 'textarea', 'select'],
}

/** The whole of `text` as sanitised HTML (a string): for versions in the history panel. */
export function renderMarkdown (text) {
  const holder = document.createElement('div')
  holder.append(renderFragment(text, {}, false))
  return holder.innerHTML
}

/**
 * `text` rendered and sanitised, as a DocumentFragment; `env` carries link references; task
 * boxes are enabled when `editable`.
 */
function renderFragment (text, env, editable) {
  return decorate(DOMPurify.sanitize(md.render(text, env), { ...SANITIZE, RETURN_DOM_FRAGMENT: true }), editable)
}

// -- where a chunk may start ----------------------------------------------------------------------

const BLANK = /^[ \t]*$/
const FENCE_OPEN = /^ {0,3}(`{3,}|~{3,})(.*)$/
const FENCE_CLOSE = /^ {0,3}(`{3,}|~{3,})[ \t]*$/
const LIST_ITEM = /^(?:[-+*]|\d{1,9}[.)])(?:[ \t]|$)/
// A chunk that may define link references ("[label]: /url", also inside a list or a quote).
const MAY_DEFINE = /\]:/

/**
 * Reads one line; says whether a chunk may start at it. A chunk starts at a line that follows
 * a blank line, begins in the first column (nothing indented can be part of a new top-level
 * block) and is not a list item (which could continue the list above: a loose list), and only
 * outside a fenced code block. What stands above such a line cannot change how it or anything
 * after it renders, but for link references, which are looked up across the whole text.
 */
function startsChunk (state, line) {
  if (state.fence) {
    const close = FENCE_CLOSE.exec(line)
    if (close && close[1][0] === state.fence[0] && close[1].length >= state.fence.length) state.fence = null
    state.blank = false
    return false
  }
  if (BLANK.test(line)) {
    state.blank = true
    return false
  }
  const starts = state.blank && line.charCodeAt(0) > 32 && !LIST_ITEM.test(line)
  state.blank = false
  const open = FENCE_OPEN.exec(line)
  // A backtick fence's info string cannot hold a backtick (CommonMark 4.5): "```a`" is code.
  if (open && !(open[1][0] === '`' && open[2].includes('`'))) state.fence = open[1]
  return starts
}

/** Where the chunks of `text` start (the first at 0): the same cuts the live preview makes. */
export function chunkStarts (text) {
  const state = { fence: null, blank: false }
  const starts = [0]
  let from = 0
  while (from <= text.length) {
    let to = text.indexOf('\n', from)
    if (to === -1) to = text.length
    if (startsChunk(state, text.slice(from, to)) && from > 0) starts.push(from)
    from = to + 1
  }
  return starts
}

// -- the live preview -----------------------------------------------------------------------------

// Milliseconds of rendering per frame while more remains: typing in the same frame stays
// well inside its budget.
const SLICE_MS = 8
// Chunks per part of the preview (`addPart`).
const PART_SIZE = 32

/**
 * The live preview of the editor's text in `element`, as a CodeMirror extension (a view
 * plugin: it sees every change of the document as CodeMirror applies it, local or remote).
 */
export function livePreview (element) {
  return ViewPlugin.define((view) => new LivePreview(view, element))
}

class LivePreview {
  constructor (view, element) {
    this.view = view
    this.element = element
    // One entry per chunk, in order: where it starts (kept up to date through every change),
    // its element, and the source it was last rendered from (null: not rendered yet).
    this.chunks = []
    // Ranges of the current text whose chunks must be cut again, unordered.
    this.dirty = [[0, view.state.doc.length]]
    // Chunks made by the last cuts: rendered first, they are where the writing is.
    this.fresh = []
    // Every chunk that needs rendering (new, or its links' references changed), in order.
    this.pending = new Set()
    // Link reference definitions of the whole text (and as JSON, to see when they change).
    this.references = {}
    this.referencesKey = '{}'
    this.scheduled = false
    this.stats = { renders: 0, chunksRendered: 0 }
    // Called after a frame that rendered chunks (scrollsync.js lines the panes up again).
    this.onRendered = null
    this.placeholder = document.createElement('p')
    this.placeholder.className = 'preview-empty'
    this.placeholder.textContent = 'Nothing here yet.'
    element.replaceChildren()

    this.schedule = this.schedule.bind(this)
    this.flush = () => this.run(Infinity, true)
    // Whether the preview is shown, from the size of its pane (0 × 0 under display: none),
    // as the browser reports it after each layout: asking (getClientRects) would force one.
    // Shown again (a layout switch, a wider window): render what changed meanwhile.
    this.shown = false
    this.resizes = new ResizeObserver((entries) => {
      const { width, height } = entries[entries.length - 1].contentRect
      this.shown = width > 0 && height > 0
      this.schedule()
    })
    this.resizes.observe(element.closest('.pane') || element)
    document.addEventListener('visibilitychange', this.schedule)
    // Printing shows the preview whatever the layout: it must be complete first.
    window.addEventListener('beforeprint', this.flush)
    this.print = window.matchMedia('print')
    this.print.addEventListener('change', this.flush)
    // A task's box toggles "[ ]" and "[x]" in the text; the preview then shows what the text
    // says (the click itself changes nothing on the page).
    this.toggle = (event) => {
      const box = event.target.closest && event.target.closest('input.task-checkbox')
      if (!box || !element.contains(box)) return
      event.preventDefault()
      this.toggleTask(box)
    }
    element.addEventListener('click', this.toggle)
    this.schedule()
  }

  toggleTask (box) {
    const { state } = this.view
    const item = box.closest('li[data-task]')
    const chunk = this.chunks.find((candidate) => candidate.node === box.closest('.preview-chunk'))
    // Only where the text is what the preview shows, and only for those who may edit.
    if (state.readOnly || !item || !chunk || this.pending.has(chunk) || this.dirty.length) return
    const offset = Number.parseInt(item.dataset.taskLine, 10)
    const number = state.doc.lineAt(chunk.from).number + offset
    if (!Number.isInteger(offset) || offset < 0 || number > state.doc.lines) return
    const line = state.doc.line(number)
    const match = TASK_SOURCE.exec(line.text)
    if (!match) return
    const at = line.from + match[1].length + 1
    this.view.dispatch({ changes: { from: at, to: at + 1, insert: match[2] === ' ' ? 'x' : ' ' }, userEvent: 'input.task' })
  }

  update (update) {
    if (update.startState.readOnly !== update.state.readOnly) {
      for (const box of this.element.querySelectorAll('.task-checkbox')) box.disabled = update.state.readOnly
    }
    if (!update.docChanged) return
    const changes = update.changes
    for (const chunk of this.chunks) chunk.from = changes.mapPos(chunk.from, -1)
    const dirty = this.dirty.map(([from, to]) => [changes.mapPos(from, -1), changes.mapPos(to, 1)])
    changes.iterChangedRanges((fromA, toA, fromB, toB) => dirty.push([fromB, toB]))
    this.dirty = dirty
    this.schedule()
  }

  destroy () {
    this.resizes.disconnect()
    document.removeEventListener('visibilitychange', this.schedule)
    window.removeEventListener('beforeprint', this.flush)
    this.print.removeEventListener('change', this.flush)
    this.element.removeEventListener('click', this.toggle)
  }

  get visible () {
    return this.shown && document.visibilityState !== 'hidden'
  }

  schedule () {
    if (this.scheduled || !this.visible || !this.hasWork()) return
    this.scheduled = true
    requestAnimationFrame(() => {
      this.scheduled = false
      this.run(SLICE_MS)
    })
  }

  hasWork () {
    return this.dirty.length > 0 || this.pending.size > 0
  }

  /** Cuts what changed, then renders for at most `budget` ms; goes on next frame if need be. */
  run (budget, always = false) {
    if (!always && !this.visible) return
    const started = performance.now()
    const rendered = this.stats.chunksRendered
    this.stats.renders++
    this.cut()
    for (const chunk of this.fresh) {
      if (performance.now() - started > budget) break
      if (this.pending.has(chunk)) this.render(chunk)
    }
    this.fresh = []
    for (const chunk of this.pending) {
      if (performance.now() - started > budget) break
      this.render(chunk)
    }
    const empty = this.view.state.doc.length === 0
    if (empty && !this.placeholder.isConnected) this.element.prepend(this.placeholder)
    else if (!empty && this.placeholder.isConnected) this.placeholder.remove()
    if (this.onRendered && this.stats.chunksRendered !== rendered) this.onRendered()
    this.schedule()
  }

  /** Cuts the dirty ranges into chunks again, keeping every chunk whose text is unchanged. */
  cut () {
    if (!this.dirty.length) return
    const doc = this.view.state.doc
    const ranges = this.dirty.sort((a, b) => a[0] - b[0])
    this.dirty = []
    let referencesChanged = false
    let done = -1 // ranges that end before this were covered by an earlier cut
    for (const [from, to] of ranges) {
      if (to <= done) continue
      const result = this.cutRange(doc, Math.max(from, done), to)
      done = result.end
      referencesChanged = referencesChanged || result.references
    }
    if (referencesChanged) this.collectReferences()
  }

  cutRange (doc, from, to) {
    const chunks = this.chunks
    // From the start of the chunk that holds the line above the change: a change can join
    // its first line to that chunk (a blank line deleted) or cut it off (one typed).
    const line = doc.lineAt(Math.min(from, doc.length))
    const above = line.number > 1 ? doc.line(line.number - 1).from : 0
    let first = 0
    for (let lo = 0, hi = chunks.length - 1; lo <= hi;) {
      const mid = (lo + hi) >> 1
      if (chunks[mid].from <= above) { first = mid; lo = mid + 1 } else hi = mid - 1
    }
    const start = chunks.length ? chunks[first].from : 0
    // Read lines from there until a new cut falls where an old one did, past the change:
    // from there on the old chunks stand as they are.
    const starts = [start]
    const state = { fence: null, blank: false }
    let next = first + 1
    let end = doc.length
    let pos = start
    for (;;) {
      const current = doc.lineAt(pos)
      if (startsChunk(state, current.text) && current.from > start) {
        while (next < chunks.length && chunks[next].from < current.from) next++
        // Strictly past the change: an old chunk starting right at its end may have lost
        // its first characters (a deletion maps its start there).
        if (current.from > to && next < chunks.length && chunks[next].from === current.from) {
          end = current.from
          break
        }
        starts.push(current.from)
      }
      if (current.to >= doc.length) {
        next = chunks.length
        break
      }
      pos = current.to + 1
    }
    // The chunks first…next-1 are replaced by the chunks at `starts`. Those whose text did not
    // change keep their element; the others reuse an element of a replaced chunk in order (so
    // an edit inside a paragraph patches its element: images in it do not reload).
    const removed = chunks.slice(first, next)
    const byText = new Map()
    for (const chunk of removed) {
      const text = chunk.source !== null ? chunk.source : chunk.text
      if (!byText.has(text)) byText.set(text, chunk)
    }
    const made = starts.map((at, index) => {
      const text = doc.sliceString(at, index + 1 < starts.length ? starts[index + 1] : end)
      const same = byText.get(text)
      if (same) {
        byText.delete(text)
        same.from = at
        same.kept = true
        return same
      }
      return { from: at, text, source: null, node: null, links: false, references: null }
    })
    let references = made.some((chunk) => chunk.references) || removed.some((chunk) => chunk.references)
    const spare = removed.filter((chunk) => !chunk.kept)
    for (const chunk of made) {
      if (chunk.kept) continue
      const old = spare.shift()
      if (old) this.pending.delete(old)
      chunk.node = old ? old.node : makeChunkElement()
      if (MAY_DEFINE.test(chunk.text)) {
        chunk.references = definitions(chunk.text)
        references = true
      }
    }
    for (const old of spare) {
      old.part = old.node.parentNode
      old.node.remove()
      this.pending.delete(old)
    }
    // Into the page, in order, next to the chunk before them.
    const parts = new Set(spare.map((old) => old.part))
    let before = first > 0 ? chunks[first - 1].node : null
    for (const chunk of made) {
      delete chunk.kept
      if (before) {
        if (before.nextSibling !== chunk.node) before.after(chunk.node)
      } else {
        const part = this.element.querySelector(':scope > .preview-part') || this.addPart(null)
        if (part.firstChild !== chunk.node) part.prepend(chunk.node)
      }
      parts.add(chunk.node.parentNode)
      before = chunk.node
    }
    for (const old of spare) old.part = null
    for (const part of parts) if (part) this.tidy(part)
    chunks.splice(first, next - first, ...made)
    for (const chunk of made) {
      if (chunk.source !== null) continue
      this.pending.add(chunk)
      this.fresh.push(chunk)
    }
    return { end, references }
  }

  /**
   * Chunks live in parts of up to PART_SIZE chunks: the browser skips the layout and paint of
   * parts out of sight (content-visibility in editor.css), and it tracks far fewer parts than
   * it would chunks.
   */
  addPart (after) {
    const part = document.createElement('div')
    part.className = 'preview-part'
    if (after) after.after(part)
    else this.element.append(part)
    return part
  }

  tidy (part) {
    if (!part.isConnected) return
    if (!part.firstChild) part.remove()
    else if (part.childElementCount > 2 * PART_SIZE) {
      const rest = [...part.children].slice(PART_SIZE)
      let target = part
      for (let index = 0; index < rest.length; index += PART_SIZE) {
        target = this.addPart(target)
        target.append(...rest.slice(index, index + PART_SIZE))
      }
    }
  }

  /** The text's link reference definitions (first one wins, as in one render of it all). */
  collectReferences () {
    const all = {}
    for (const chunk of this.chunks) {
      for (const [label, target] of Object.entries(chunk.references || {})) {
        if (!(label in all)) all[label] = target
      }
    }
    const key = JSON.stringify(all)
    if (key === this.referencesKey) return
    this.references = all
    this.referencesKey = key
    for (const chunk of this.chunks) if (chunk.links) this.pending.add(chunk)
  }

  render (chunk) {
    const text = chunk.source === null ? chunk.text : chunk.source
    patch(chunk.node, renderFragment(text, { references: { ...this.references } }, !this.view.state.readOnly))
    chunk.source = text
    chunk.text = null // kept once, as `source`
    chunk.links = text.includes('[')
    this.pending.delete(chunk)
    this.stats.chunksRendered++
  }
}

function makeChunkElement () {
  const element = document.createElement('div')
  element.className = 'preview-chunk'
  return element
}

function definitions (text) {
  const env = {}
  md.parse(text, env)
  return env.references || null
}

/**
 * Replaces only the top-level blocks of `element` that changed, so a remote keystroke in one
 * paragraph does not rebuild the others (no reloaded images, no lost text selection).
 */
function patch (element, fragment) {
  const fresh = [...fragment.childNodes]
  const current = [...element.childNodes]
  fresh.forEach((node, index) => {
    const old = current[index]
    if (!old) element.append(node)
    else if (!old.isEqualNode(node)) old.replaceWith(node)
  })
  for (const extra of current.slice(fresh.length)) extra.remove()
}
