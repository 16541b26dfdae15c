// Light or dark: the system's choice (prefers-color-scheme, in app.css) unless this browser chose
// one with the toggle in the top bar, kept in localStorage. Loaded in <head>, before the page is
// painted, so a chosen theme never flashes the other one first.
(function () {
  const KEY = 'collab:theme'
  const root = document.documentElement
  const system = window.matchMedia('(prefers-color-scheme: dark)')
  const stored = () => {
    try { return localStorage.getItem(KEY) } catch (_) { return null }
  }
  const apply = () => {
    const chosen = stored()
    if (chosen === 'light' || chosen === 'dark') root.dataset.theme = chosen
    else delete root.dataset.theme
    const dark = root.dataset.theme ? root.dataset.theme === 'dark' : system.matches
    const toggle = document.getElementById('theme-toggle')
    if (toggle) {
      toggle.setAttribute('aria-pressed', String(dark))
      toggle.title = dark ? 'Dark mode is on: switch to light' : 'Light mode is on: switch to dark'
    }
  }
  apply()
  system.addEventListener('change', apply)
  window.addEventListener('storage', (event) => { if (event.key === KEY) apply() })
  document.addEventListener('DOMContentLoaded', () => {
    apply()
    const toggle = document.getElementById('theme-toggle')
    if (!toggle) return
    toggle.addEventListener('click', () => {
      const next = toggle.getAttribute('aria-pressed') === 'true' ? 'light' : 'dark'
      root.dataset.theme = next
      try { localStorage.setItem(KEY, next) } catch (_) {} // refused: this page at least
      apply()
      root.dataset.theme = next
    })
  })
})()
