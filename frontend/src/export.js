// The Export menu: "Download .md" and "Download .html" are plain links to the server's export
// (GET /documents/<id>/export/?format=…), which answers with an attachment named after the
// title; "Print" opens the browser's print dialog, where the print stylesheet (editor.css,
// @media print) leaves only the rendered preview, so "Save as PDF" looks like it. Ctrl/Cmd-P
// prints the same way.

export function bindExport (menu) {
  if (!menu) return
  const summary = menu.querySelector('summary')
  const close = () => { menu.open = false }
  menu.querySelector('[data-export=print]').addEventListener('click', () => {
    close()
    window.print()
  })
  for (const link of menu.querySelectorAll('a[data-export]')) link.addEventListener('click', close)
  document.addEventListener('click', (event) => {
    if (menu.open && !menu.contains(event.target)) close()
  })
  menu.addEventListener('keydown', (event) => {
    if (event.key !== 'Escape' || !menu.open) return
    event.stopPropagation() // the menu, not the history panel behind it
    close()
    summary.focus()
  })
}
