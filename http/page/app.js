// The fsync page: status, a file browser, history, and a live editor for
// text files. The editor speaks Braid-HTTP through the reference client
// (braid_fetch, from braid-http-client.js) with the simpleton rules on top:
// the page keeps only the text at the version it names, applies an update
// only when its Parents are that version, and names its own edits
// PEER-COUNTER (the counter advances by the code points deleted and
// inserted). The daemon merges; the page never does.

'use strict'

const $ = id => document.getElementById(id)
const enc = path => path.split('/').filter(Boolean).map(encodeURIComponent).join('/')
const fmt_time = ms => ms ? new Date(ms).toLocaleString() : 'never'
const el = (tag, props = {}, ...kids) => {
  const e = Object.assign(document.createElement(tag), props)
  for (const k of kids) e.append(k)
  return e
}

// ---- status, every two seconds ----

async function refresh_status () {
  let s
  try {
    const r = await fetch('/.fsync/status')
    if (r.status === 401) return show_locked()
    s = await r.json()
  } catch (e) {
    $('daemon').textContent = 'daemon not reachable'
    return
  }
  $('device').textContent = s.device
  $('daemon').textContent = s.store_error ? `NOT SAVING: ${s.store_error}` : `listening on ${s.listen}`
  const folders = $('folders')
  folders.replaceChildren(...s.folders.map(f => el('li', {},
    el('a', { textContent: f.name, onclick: () => go(f.name, '') }),
    el('span', { className: 'muted', textContent: ` ${f.files} files` }),
    ...(f.problems || []).map(p => el('div', { className: 'bad', textContent: p })))))
  const peers = $('peers')
  peers.replaceChildren(...s.peers.map(p => el('li', {},
    el('span', { className: p.connected ? 'ok' : 'muted', textContent: (p.connected ? '● ' : '○ ') + p.id.slice(0, 14) }),
    el('div', { className: 'muted', textContent: p.connected
      ? `${p.address || ''} ${p.to_send ? p.to_send + ' to send' : ''} ${p.to_fetch ? p.to_fetch + ' to fetch' : ''}`
      : `last seen ${fmt_time(p.last_seen)}` }))))
  $('errors-box').hidden = !s.errors.length
  $('errors').replaceChildren(...s.errors.slice(-5).map(e => el('li', { className: 'bad', textContent: `${fmt_time(e.time)}: ${e.message}` })))
  if (!current.folder && s.folders.length) go(s.folders[0].name, '')
}

function show_locked () {
  document.body.replaceChildren(el('p', { textContent: 'This page needs its access token: open the address `fsync open` prints.' }))
}

// ---- browsing ----

const current = { folder: null, path: '', editor: null }

function go (folder, path) {
  if (current.editor) current.editor.close()
  current.editor = null
  Object.assign(current, { folder, path })
  location.hash = '#' + enc(folder) + '/' + enc(path)
  crumbs()
  show(folder, path)
}

function crumbs () {
  const parts = current.path.split('/').filter(Boolean)
  const out = [el('a', { textContent: current.folder, onclick: () => go(current.folder, '') })]
  parts.forEach((name, i) => {
    out.push(' / ', el('a', { textContent: name, onclick: () => go(current.folder, parts.slice(0, i + 1).join('/')) }))
  })
  $('crumbs').replaceChildren(...out)
}

async function show (folder, path) {
  $('file').hidden = true
  $('listing').hidden = false
  // A directory's listing is at its name with a slash (the server
  // redirects there); the folder's at `/FOLDER/`.
  const url = '/' + enc(folder) + '/' + enc(path)
  const r = await fetch(url, { headers: { Accept: 'application/json' } })
  if (!r.ok) {
    $('listing').tBodies[0].replaceChildren(el('tr', {}, el('td', { className: 'bad', textContent: await r.text() })))
    return
  }
  const type = r.headers.get('content-type') || ''
  if (type.startsWith('application/json')) {
    const j = await r.json()
    if (j.entries) return list(folder, path, j.entries)
    if (j.kind === 'symlink') return open_other(folder, path, `a symlink to ${j.target}`)
  }
  if (type.startsWith('text/plain')) return open_text(folder, path)
  open_other(folder, path, `binary, ${r.headers.get('content-length')} bytes`, url)
}

function list (folder, path, entries) {
  const rows = entries.map(e => {
    const full = path ? path + '/' + e.name : e.name
    return el('tr', {},
      el('td', {}, el('a', { textContent: e.name + (e.kind === 'directory' ? '/' : ''), onclick: () => go(folder, full) })),
      el('td', { className: 'muted', textContent: e.kind === 'file' ? `${e.size} bytes${e.text ? '' : ', binary'}` : e.kind }))
  })
  if (!rows.length) rows.push(el('tr', {}, el('td', { className: 'muted', textContent: '(empty)' })))
  $('listing').tBodies[0].replaceChildren(...rows)
}

function open_other (folder, path, what, url) {
  $('listing').hidden = true
  $('file').hidden = false
  $('editor').hidden = true
  $('history').hidden = true
  $('binary').hidden = false
  $('file-state').textContent = what
  $('binary').replaceChildren(url ? el('a', { href: url, download: path.split('/').pop(), textContent: 'download' }) : '')
}

function open_text (folder, path) {
  $('listing').hidden = true
  $('file').hidden = false
  $('binary').hidden = true
  $('history').hidden = true
  const ta = $('editor')
  ta.hidden = false
  ta.value = ''
  ta.disabled = true
  current.editor = edit('/' + enc(folder) + '/' + enc(path), ta, msg => { $('file-state').textContent = msg })
}

// ---- the live editor: simpleton over braid_fetch ----

const cps = s => Array.from(s)                 // code points
const same = (a, b) => a.length === b.length && a.every((v, i) => v === b[i])

function edit (url, ta, say) {
  const peer = Math.random().toString(36).slice(2)
  const headers = { 'Merge-Type': 'simpleton' }
  let version = []       // the version the editor holds, sorted
  let state = ''         // the text at that version
  let counter = -1       // numbers our edits: peer-counter
  let outstanding = 0
  let dirty = false
  const aborter = new AbortController()

  braid_fetch(url, {
    subscribe: true, retry: true, multiplex: false, peer, headers, heartbeats: 20, signal: aborter.signal,
    parents: () => version.length ? version : null,
  }).then(res => res.subscribe(update => {
    const parents = (update.parents || []).slice().sort()
    if (dirty || !same(version, parents)) return   // not on what we hold
    if (update.patches) {
      const patches = update.patches.map(p => ({ range: p.range.match(/\d+/g).map(Number), content: p.content_text }))
      apply_to_textarea(ta, patches)
      state = ta.value
    } else {
      state = update.body_text
      ta.value = state
    }
    version = update.version.slice().sort()
    ta.disabled = false
    say(`live, at ${version.join(', ')}`)
  }, e => say(`disconnected: ${e}`))).catch(e => say(`cannot subscribe: ${e}`))

  function send () {
    dirty = false
    const now = ta.value
    if (now === state) return
    // Only what changed, character by character (see diff.js).
    const patches = text_patches(state, now)
    for (const p of patches) counter += (p.range[1] - p.range[0]) + cps(p.content).length
    const mine = [`${peer}-${counter}`]
    const parents = version
    version = mine
    state = now
    outstanding++
    say('saving…')
    braid_fetch(url, {
      method: 'PUT', version: mine, parents, peer, headers, retry: true, multiplex: false,
      patches: patches.map(p => ({ unit: 'text', range: `[${p.range[0]}:${p.range[1]}]`, content: p.content })),
    }).then(r => {
      outstanding--
      say(r.ok ? (outstanding ? 'saving…' : 'saved') : `not saved: ${r.status}`)
      if (dirty && outstanding < 10) send()
    }, e => { outstanding--; say(`not saved: ${e}`) })
  }

  ta.oninput = () => {
    dirty = true
    if (outstanding < 10) send()
  }
  return { close: () => { aborter.abort(); ta.oninput = null } }
}

// Patches in code points of the textarea's text, all on that text; the
// selection moves with the text around it.
function apply_to_textarea (ta, patches) {
  const text = cps(ta.value)
  const utf16 = i => text.slice(0, i).join('').length
  const sel = [ta.selectionStart, ta.selectionEnd]
  let out = [], at = 0
  let shift = [0, 0]
  for (const p of patches.slice().sort((x, y) => x.range[0] - y.range[0])) {
    const [s, e] = p.range
    out.push(text.slice(at, s).join(''), p.content)
    const s16 = utf16(s), e16 = utf16(e), delta = p.content.length - (e16 - s16)
    for (let i = 0; i < 2; i++) {
      if (sel[i] >= e16) shift[i] += delta
      else if (sel[i] > s16) shift[i] += s16 - sel[i]
    }
    at = e
  }
  out.push(text.slice(at).join(''))
  ta.value = out.join('')
  ta.selectionStart = sel[0] + shift[0]
  ta.selectionEnd = sel[1] + shift[1]
}

// ---- history ----

$('history-button').onclick = async () => {
  const h = $('history')
  h.hidden = !h.hidden
  if (h.hidden) return
  const { folder, path } = current
  const r = await fetch('/.fsync/log/' + enc(folder) + '/' + enc(path))
  if (!r.ok) return $('old').replaceChildren(await r.text())
  // Changes of one author less than a minute apart are one row (typing
  // makes a change a keystroke); a row's version is its last. Creations,
  // deletions, moves and binary contents stay rows of their own.
  const rows = []
  for (const c of await r.json()) {
    const last = rows[rows.length - 1]
    if (last && last.device === c.device && c.time - last.time < 60000 && !/binary|delete|move|create/.test(c.change + last.change)) {
      Object.assign(last, { version: c.version, time: c.time, size: last.size + c.size, count: last.count + 1 })
    } else rows.push({ ...c, count: 1 })
  }
  // Device IDs have dashes; other authors are Braid clients (this page).
  const who = d => d.includes('-') ? d.slice(0, 14) : 'a web client'
  $('versions').tBodies[0].replaceChildren(...rows.reverse().map(c => el('tr', {},
    el('td', { textContent: fmt_time(c.time) }),
    el('td', { className: 'muted', textContent: c.count > 1 ? `${c.count} changes (${c.size})` : `${c.change} (${c.size})` }),
    el('td', { className: 'muted', textContent: who(c.device) }),
    el('td', {}, el('button', { type: 'button', textContent: 'view', onclick: () => view(c.version) })),
    el('td', {}, el('button', { type: 'button', textContent: 'restore', onclick: () => restore(c.version) })))))
}

async function view (v) {
  const { folder, path } = current
  const r = await fetch('/' + enc(folder) + '/' + enc(path), { headers: { Version: JSON.stringify(v) } })
  $('old').textContent = r.ok ? await r.text() : `${r.status}: ${await r.text()}`
}

async function restore (v) {
  const { folder, path } = current
  const r = await fetch('/.fsync/restore/' + enc(folder) + '/' + enc(path) + '?version=' + encodeURIComponent(v), { method: 'POST' })
  $('old').textContent = await r.text()
}

// ---- start ----

const start = decodeURIComponent(location.hash.slice(1)).split('/')
if (start[0]) go(start[0], start.slice(1).join('/'))
refresh_status()
setInterval(refresh_status, 2000)
