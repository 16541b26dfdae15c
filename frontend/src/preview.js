// The Markdown preview. Whatever a co-author types is untrusted: markdown-it runs with raw HTML
// off (it is shown as text) and refuses javascript:/vbscript:/data: links, and the HTML it
// produces is sanitised again by DOMPurify before it reaches the page. Either layer alone
// should be enough; both together survive a bug in one of them.

import DOMPurify from 'dompurify'
import MarkdownIt from 'markdown-it'

const md = new MarkdownIt({ html: false, linkify: true, typographer: true })

DOMPurify.addHook('afterSanitizeAttributes', (node) => {
  if (node.tagName === 'A' && node.hasAttribute('href')) {
    node.setAttribute('target', '_blank')
    node.setAttribute('rel', 'noopener noreferrer nofollow')
  }
  if (node.tagName === 'IMG') node.setAttribute('loading', 'lazy')
})

export function renderMarkdown (text) {
  return DOMPurify.sanitize(md.render(text), {
    USE_PROFILE: { html: true },
    FORBID_TAGS: ['style', 'form', 'input', 'button', 'textarea', 'select'],
  })
}

/**
 * Replaces only the top-level blocks that changed, so a remote keystroke in one paragraph does
 * not rebuild the others (no reloaded images, no lost text selection in the preview).
 */
function patch (element, html) {
  const next = document.createElement('template')
  next.innerHTML = html
  const fresh = [...next.content.childNodes]
  const current = [...element.childNodes]
  fresh.forEach((node, index) => {
    const old = current[index]
    if (!old) element.append(node)
    else if (!old.isEqualNode(node)) old.replaceWith(node)
  })
  for (const extra of current.slice(fresh.length)) extra.remove()
}

/**
 * Keeps `element` showing the rendered `ytext`, at most once per animation frame, and only
 * touching the DOM when the output changed (no flicker, no reloaded images on cursor moves).
 * A large text takes long to render (≈ 0.5 s for 2 MB): then the next render waits a few times
 * as long as the last one took, so that typing stays responsive and keystrokes share a render.
 */
export function bindPreview (ytext, element) {
  let scheduled = false
  let last = null
  let cost = 0
  const render = () => {
    scheduled = false
    const started = performance.now()
    const html = renderMarkdown(ytext.toString())
    if (html !== last) {
      last = html
      patch(element, html || '<p class="preview-empty">Nothing here yet.</p>')
    }
    cost = performance.now() - started
  }
  const schedule = () => {
    if (scheduled) return
    scheduled = true
    if (cost < 50) requestAnimationFrame(render)
    else setTimeout(() => requestAnimationFrame(render), Math.min(4 * cost, 5000))
  }
  ytext.observe(schedule)
  render()
  return () => ytext.unobserve(schedule)
}
