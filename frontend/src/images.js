// Images pasted or dropped into the editor. Each image file is uploaded to
// POST <apiBase>images/ (docs/api.md, "Images"); meanwhile a placeholder, `![Uploading name…]()`,
// stands where it will go, for everyone in the document to see. On success the placeholder
// becomes `![name](url)`, a URL the server answers only for people who may view the document;
// on failure it is removed and the server's reason is shown.
//
// The placeholder's position is mapped through every change, co-authors' included (they reach
// CodeMirror as transactions too), so typing elsewhere while an image uploads is fine; if
// someone deletes the placeholder meanwhile, the image is not inserted.

import { StateEffect, StateField } from '@codemirror/state'
import { EditorView } from '@codemirror/view'

import { api, ApiError } from './api.js'

const added = StateEffect.define()
const done = StateEffect.define()

/** The placeholders of uploads in flight: { id, from, to }, mapped through every change. */
const uploads = StateField.define({
  create: () => [],
  update (list, tr) {
    let next = list
    if (tr.docChanged) {
      next = next.map((entry) => ({
        ...entry,
        from: tr.changes.mapPos(entry.from, 1),
        to: Math.max(tr.changes.mapPos(entry.from, 1), tr.changes.mapPos(entry.to, -1)),
      }))
    }
    for (const effect of tr.effects) {
      if (effect.is(added)) next = [...next, effect.value]
      else if (effect.is(done)) next = next.filter((entry) => entry.id !== effect.value)
    }
    return next
  },
})

let counter = 0

/**
 * The editor extension: paste and drop handlers for image files, and the state that follows
 * their placeholders. `writable()` says whether this page may change the document now (the
 * role can change while it is open); `maxBytes` is the server's MAX_IMAGE_BYTES (0: unknown),
 * checked before anything is sent.
 */
export function imageUploads ({ apiBase, maxBytes = 0, writable, toast }) {
  const start = (view, files, from, to, userEvent) => {
    if (!writable()) {
      toast('You can only view this document: images cannot be added.', 'error')
      return
    }
    const accepted = []
    for (const file of files) {
      if (maxBytes && file.size > maxBytes) {
        toast(`“${file.name || 'image'}” is ${size(file.size)}; images are limited to ${size(maxBytes)}.`, 'error')
      } else {
        accepted.push(file)
      }
    }
    if (!accepted.length) return
    const entries = []
    let insert = ''
    for (const file of accepted) {
      if (insert) insert += '\n'
      const alt = altText(file.name)
      const placeholder = `![Uploading ${alt}…]()`
      entries.push({ id: `upload-${++counter}`, from: from + insert.length, to: from + insert.length + placeholder.length, placeholder, alt, file })
      insert += placeholder
    }
    view.dispatch({
      changes: { from, to, insert },
      selection: { anchor: from + insert.length },
      effects: entries.map(({ id, from, to }) => added.of({ id, from, to })),
      userEvent,
      scrollIntoView: true,
    })
    for (const entry of entries) upload(view, entry)
  }

  const upload = async (view, { id, placeholder, alt, file }) => {
    const form = new FormData()
    form.append('image', file, file.name || 'image')
    let replacement = ''
    try {
      const image = await api(`${apiBase}images/`, { method: 'POST', form })
      replacement = `![${alt}](${image.url})`
    } catch (error) {
      toast(uploadError(error, file, maxBytes), 'error')
    }
    settle(view, id, placeholder, replacement)
  }

  return [
    uploads,
    EditorView.domEventHandlers({
      paste (event, view) {
        // Office suites put a picture of the copied text beside the text itself: text wins.
        if (event.clipboardData?.getData('text/plain')) return false
        const files = imageFiles(event.clipboardData)
        if (!files.length) return false
        event.preventDefault()
        const { from, to } = view.state.selection.main
        start(view, files, from, to, 'input.paste')
        return true
      },
      drop (event, view) {
        const files = imageFiles(event.dataTransfer)
        if (!files.length) return false
        event.preventDefault() // the browser would open the file instead of the document
        const at = view.posAtCoords({ x: event.clientX, y: event.clientY }) ?? view.state.selection.main.head
        start(view, files, at, at, 'input.drop')
        return true
      },
    }),
  ]
}

/** Replaces the upload's placeholder with `replacement` (empty: removes it), if it is still there. */
function settle (view, id, placeholder, replacement) {
  const entry = view.state.field(uploads, false)?.find((candidate) => candidate.id === id)
  let from = -1
  if (entry && view.state.sliceDoc(entry.from, entry.to) === placeholder) from = entry.from
  const changes = from >= 0 ? { from, to: from + placeholder.length, insert: replacement } : []
  view.dispatch({ changes, effects: done.of(id), userEvent: 'input' })
}

/** The image files of a paste or a drop (others are left to the editor: text files, say). */
function imageFiles (data) {
  if (!data) return []
  let files = [...(data.files || [])]
  if (!files.length && data.items) {
    files = [...data.items].filter((item) => item.kind === 'file').map((item) => item.getAsFile()).filter(Boolean)
  }
  return files.filter((file) => file.type.startsWith('image/'))
}

/**
 * Alt text from a file name, safe inside `![...]`: no brackets or backslashes left unescaped,
 * one line, not too long. The name is whatever the file was called on someone's disk.
 */
export function altText (name) {
  const base = String(name || '').replace(/\.[A-Za-z0-9]{1,5}$/, '')
  const line = base.replace(/[\u0000-\u001f\u007f]+/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 100)
  return line.replace(/[\\[\]]/g, '\\$&') || 'image'
}

function uploadError (error, file, maxBytes) {
  const name = `“${file.name || 'image'}”`
  if (error instanceof ApiError) {
    // A 413 from a proxy in front of collab has no JSON detail.
    if (error.status === 413 && !error.body) {
      return maxBytes ? `${name} is too large: images are limited to ${size(maxBytes)}.` : `${name} is too large.`
    }
    return `${name} was not added: ${error.message}`
  }
  return `${name} was not added: ${error.message || error}`
}

function size (bytes) {
  if (bytes < 1024) return `${bytes} bytes`
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`
  return `${(bytes / (1024 * 1024)).toFixed(1)} MiB`
}
