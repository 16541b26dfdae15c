// Word and character counts of the document, shown under the editor. Kept up to date through
// every change without reading the whole text again: words never span a line break, so the
// counts of the lines a change touched are taken off and those of the lines it made added on
// (a keystroke in a 2 MB text counts one line).

import { StateField } from '@codemirror/state'
import { ViewPlugin } from '@codemirror/view'

const SPACE = /\s+/
const WORD = /[\p{L}\p{N}]/u
const HIGH_SURROGATE = /[\uD800-\uDBFF]/g

/**
 * Counts of `text`: words are runs of non-space holding a letter or a digit (so Markdown's
 * `#`, `-` and `>` are not words); characters are code points, line breaks not counted.
 */
export function countText (text) {
  let words = 0
  for (const token of text.split(SPACE)) if (token && WORD.test(token)) words++
  const newlines = text.split('\n').length - 1
  const pairs = (text.match(HIGH_SURROGATE) || []).length
  return { words, characters: text.length - newlines - pairs }
}

function countLines (doc, first, last) {
  let words = 0
  let characters = 0
  for (const iter = doc.iterLines(first, last + 1); !iter.next().done;) {
    const counts = countText(iter.value)
    words += counts.words
    characters += counts.characters
  }
  return { words, characters }
}

/** The counts of the whole document, as a state field. */
export const counts = StateField.define({
  create: (state) => countLines(state.doc, 1, state.doc.lines),
  update (value, tr) {
    if (!tr.docChanged) return value
    const before = tr.startState.doc
    const after = tr.newDoc
    // The lines each change touched, before and after it; changes on one line counted once.
    const spans = []
    tr.changes.iterChangedRanges((fromA, toA, fromB, toB) => {
      const span = [before.lineAt(fromA).number, before.lineAt(toA).number, after.lineAt(fromB).number, after.lineAt(toB).number]
      const last = spans[spans.length - 1]
      if (last && (span[0] <= last[1] || span[2] <= last[3])) {
        last[1] = Math.max(last[1], span[1])
        last[3] = Math.max(last[3], span[3])
      } else spans.push(span)
    })
    let { words, characters } = value
    for (const [fromA, toA, fromB, toB] of spans) {
      const gone = countLines(before, fromA, toA)
      const made = countLines(after, fromB, toB)
      words += made.words - gone.words
      characters += made.characters - gone.characters
    }
    return { words, characters }
  },
})

const number = (n) => n.toLocaleString('en')
const plural = (n, one, many) => `${number(n)} ${n === 1 ? one : many}`

/** Shows the counts in `element` ("1,204 words · 7,310 characters"). */
export function showCounts (element) {
  return [
    counts,
    ViewPlugin.define((view) => {
      let shown = null
      const render = () => {
        const value = view.state.field(counts)
        if (value === shown) return
        shown = value
        element.textContent = `${plural(value.words, 'word', 'words')} · ${plural(value.characters, 'character', 'characters')}`
        element.dataset.words = String(value.words)
        element.dataset.characters = String(value.characters)
      }
      render()
      return { update: render }
    }),
  ]
}
