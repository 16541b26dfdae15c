// Editor and preview scroll together in the split layout. The live preview renders the text in
// chunks (preview.js), each knowing where it starts in the text: the line at the top of one pane
// is found in its chunk, and the other pane is scrolled to the same chunk, the same fraction of
// the way through it. Whichever pane the reader scrolls leads; the other follows (its own
// scroll events, caused by following, are not taken for the reader's).

/**
 * Keeps `pane` (the preview's scrolling element) and the editor of `view` scrolled together
 * while `active()` says both are shown. `preview` is the LivePreview of preview.js.
 */
export function scrollTogether ({ view, preview, pane, active }) {
  const editor = view.scrollDOM
  // The scroll position each element was last moved to by this module (to tell its echo
  // from the reader's own scrolling).
  const moved = new Map()
  let leader = editor
  let frame = 0
  // When the reader last touched a pane, and when the layout or this module last moved one.
  let touched = 0
  let settled = 0
  let checks = 0

  const follow = () => {
    frame = 0
    if (!active()) return
    // Chunks not in the page (cut, not placed yet) have no place to line up with.
    const chunks = preview.chunks.filter((chunk) => chunk.node && chunk.node.isConnected)
    if (!chunks.length) return
    const went = leader === editor
      ? move(pane, previewTop(view, pane, chunks))
      : move(editor, editorTop(view, pane, chunks))
    // Where the follower came to is laid out for real only now (the editor measures the lines
    // it estimated, the preview lays out parts it skipped): look again next frame, until
    // nothing moves (a few frames at most).
    if (went && ++checks < 8) schedule()
    else checks = 0
  }
  const move = (element, top) => {
    const target = Math.round(Math.max(0, top))
    if (Math.abs(element.scrollTop - target) < 1) return false
    element.scrollTop = target
    moved.set(element, element.scrollTop) // as the browser clamped it
    settled = performance.now()
    return true
  }
  const schedule = () => {
    if (!frame) frame = requestAnimationFrame(follow)
  }
  // The reader's hand on a pane (wheel, touch, a click on its scroll bar, a key) makes it lead.
  const intent = (element) => () => {
    leader = element
    touched = performance.now()
  }
  const scrolled = (element) => () => {
    const expected = moved.get(element)
    moved.delete(element)
    if (expected !== undefined && Math.abs(element.scrollTop - expected) <= 1) return // our own
    // The browser keeps what is on screen in place when the layout changes above it (scroll
    // anchoring; parts of the preview laid out for the first time as they come into view):
    // within a second of a render, a resize or a move, that is not the reader scrolling
    // unless they touched it (else: find in page, a link to a heading). With one pane shown,
    // whatever scrolls it is what is read there.
    const now = performance.now()
    if (element !== leader && (!active() || now - settled > 1000 || now - touched < 1000)) leader = element
    schedule()
  }
  const listeners = []
  for (const element of [editor, pane]) {
    const onScroll = scrolled(element)
    const onIntent = intent(element)
    element.addEventListener('scroll', onScroll, { passive: true })
    listeners.push([element, 'scroll', onScroll])
    for (const type of ['wheel', 'touchstart', 'pointerdown', 'keydown']) {
      element.addEventListener(type, onIntent, { passive: true })
      listeners.push([element, type, onIntent])
    }
  }
  const relayout = () => {
    settled = performance.now()
    schedule()
  }
  // A chunk rendered (or re-rendered) changes the preview's heights; a layout switch or a
  // resize changes both: line them up again, the pane the reader last used leading (the one
  // read in the "Preview" layout, written in in "Write", when the split comes back).
  preview.onRendered = relayout
  const resizes = new ResizeObserver(relayout)
  resizes.observe(pane)
  resizes.observe(editor)
  // Their contents: lines the editor measured, parts the preview laid out.
  resizes.observe(view.contentDOM)
  resizes.observe(preview.element)
  return {
    /** Which pane leads now ('editor' or 'preview'). */
    get leader () { return leader === editor ? 'editor' : 'preview' },
    destroy () {
      resizes.disconnect()
      for (const [element, type, listener] of listeners) element.removeEventListener(type, listener)
      if (frame) cancelAnimationFrame(frame)
      preview.onRendered = null
    },
  }
}

// Both panes are mapped onto each other piecewise: the top of each chunk in one is the top of
// the same chunk in the other, in between in proportion; the top of a pane (before the first
// chunk, its padding) is the top of the other.

// Where chunk `index` starts in the editor's scrolled content (chunks.length: where the text
// ends), in pixels.
function editorAnchor (view, chunks, index) {
  const origin = view.documentTop - view.scrollDOM.getBoundingClientRect().top + view.scrollDOM.scrollTop
  return origin + (index < chunks.length ? view.lineBlockAt(chunks[index].from).top : view.contentHeight)
}

// The same in the preview's scrolled content.
function previewAnchor (pane, chunks, index) {
  const origin = pane.scrollTop - pane.getBoundingClientRect().top
  const rect = chunks[Math.min(index, chunks.length - 1)].node.getBoundingClientRect()
  return origin + (index < chunks.length ? rect.top : rect.bottom)
}

/** Where `from` (anchors by index) at `top` maps to in `to`: -1 is the top of both. */
function map (top, count, from, to) {
  const at = (anchors, index) => index < 0 ? 0 : anchors(index)
  // The last anchor at or above `top`, by binary search (-1: none).
  let found = -1
  for (let lo = 0, hi = count; lo <= hi;) {
    const mid = (lo + hi) >> 1
    if (from(mid) <= top) { found = mid; lo = mid + 1 } else hi = mid - 1
  }
  const start = at(from, found)
  const target = at(to, found)
  if (found === count) return target + (top - start)
  const end = from(found + 1)
  const share = end > start ? (top - start) / (end - start) : 0
  return target + share * (to(found + 1) - target)
}

/** Where the preview shows what the editor shows at its top `scrollTop`. */
function previewTop (view, pane, chunks) {
  return map(view.scrollDOM.scrollTop, chunks.length,
    (index) => editorAnchor(view, chunks, index), (index) => previewAnchor(pane, chunks, index))
}

/** Where the editor shows what the preview shows at its top `scrollTop`. */
function editorTop (view, pane, chunks) {
  return map(pane.scrollTop, chunks.length,
    (index) => previewAnchor(pane, chunks, index), (index) => editorAnchor(view, chunks, index))
}
