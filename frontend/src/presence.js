// The presence bar: one avatar per person here (several tabs of one person count once), the
// local user first, names on hover. Re-rendered on every awareness change, which is cheap.

const MAX_SHOWN = 5

export function initials (name) {
  const words = String(name || '?').trim().split(/[\s._-]+/).filter(Boolean)
  const letters = words.length > 1 ? words[0][0] + words[1][0] : (words[0] || '?')[0]
  return letters.toUpperCase()
}

export function people (awareness) {
  const byKey = new Map()
  for (const [clientId, state] of awareness.getStates()) {
    const user = state && state.user
    if (!user || !user.name) continue
    const key = user.id != null ? `id:${user.id}` : `name:${user.name}`
    const self = clientId === awareness.clientID
    const known = byKey.get(key)
    if (!known) byKey.set(key, { ...user, self, key })
    else if (self) known.self = true
  }
  return [...byKey.values()].sort((a, b) => (b.self - a.self) || a.name.localeCompare(b.name))
}

export function bindPresence (awareness, element) {
  const render = () => {
    const everyone = people(awareness)
    const shown = everyone.slice(0, MAX_SHOWN)
    const hidden = everyone.slice(MAX_SHOWN)
    element.replaceChildren(...shown.map(avatar))
    if (hidden.length) {
      const more = document.createElement('span')
      more.className = 'presence-avatar presence-more'
      more.textContent = `+${hidden.length}`
      more.title = hidden.map((p) => p.name).join(', ')
      more.setAttribute('role', 'img')
      more.setAttribute('aria-label', `and ${hidden.length} more: ${more.title}`)
      element.append(more)
    }
    const others = everyone.filter((p) => !p.self).length
    element.setAttribute('aria-label', others === 0 ? 'Only you are here'
      : `${others} other ${others === 1 ? 'person' : 'people'} here: ${everyone.filter((p) => !p.self).map((p) => p.name).join(', ')}`)
    element.dataset.count = String(everyone.length)
  }
  awareness.on('change', render)
  render()
}

function avatar (person) {
  const span = document.createElement('span')
  span.className = 'presence-avatar' + (person.self ? ' is-self' : '')
  span.style.setProperty('--user-color', person.color || '#6b7280')
  span.textContent = initials(person.name)
  span.title = person.self ? `${person.name} (you)` : person.name
  // A picture of a person to assistive technology: named, not spelled out as initials.
  span.setAttribute('role', 'img')
  span.setAttribute('aria-label', span.title)
  span.dataset.name = person.name
  return span
}
