// What this browser holds that the server does not: the text inserted here that a server state
// vector (from its sync step 1) does not cover. Used when the socket turned read-only (a role
// change) or a change was too large to save, to tell the person what was not saved and let them
// copy it. Deletions the server has not seen are not listed: they lose no text.

/**
 * The runs of inserted text, in document order, that `stateVector` (Map client → clock) does
 * not cover and that are still in the text. Adjacent unsaved inserts make one run; saved text
 * between them starts a new one. Walks the Y.Text's items (item.id.clock is the clock of the
 * item's first character; an item may be partly known when the server has its beginning).
 */
export function unsavedInserts (ytext, stateVector) {
  const runs = []
  let run = null
  for (let item = ytext._start; item !== null; item = item.right) {
    if (item.deleted) continue // deleted text neither shows nor breaks a run
    const str = item.content && item.content.str
    if (typeof str !== 'string') { run = null; continue }
    const known = stateVector.get(item.id.client) || 0
    if (item.id.clock + item.length <= known) { run = null; continue }
    let text = str
    if (item.id.clock < known) {
      text = str.slice(known - item.id.clock)
      run = null // the saved beginning of this item stands between
    }
    if (run) run.text += text
    else runs.push(run = { text })
  }
  return runs.map((r) => r.text)
}

/** "12 characters", "1,234 characters", "1 character". */
export function characters (count) {
  return `${count.toLocaleString('en')} character${count === 1 ? '' : 's'}`
}
