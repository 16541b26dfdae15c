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
 */
export function bindPreview (ytext, element) {
  let scheduled = false
  let last = null
  const render = () => {
    scheduled = false
    const html = renderMarkdown(ytext.toString())
    if (html === last) return
    last = html
    patch(element, html || '<p class="preview-empty">Nothing here yet.</p>')
  }
  const schedule = () => {
    if (scheduled) return
    scheduled = true
    requestAnimationFrame(render)
  }
  ytext.observe(schedule)
  render()
  return () => ytext.unobserve(schedule)
}
