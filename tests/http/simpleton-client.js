// A Braid-HTTP client for the end-to-end tests: the reference client
// (braid-http 1.3.80's fetch, unmodified, vendored in http/page/vendor)
// with braid-text's simpleton rules on top, in the few lines below. The
// test drives it over stdin and reads it on stdout, one JSON object a
// line.
//
//   node simpleton-client.js URL TOKEN
//   in:  {"cmd":"edit","pos":P,"del":D,"ins":"..."}   an edit at code point P
//        {"cmd":"type","n":N,"seed":S}                 N random keystrokes
//        {"cmd":"state"}                               prints the state
//   out: {"event":"update",...} {"event":"typed"} {"state":...,"outstanding":n}

'use strict'
const { fetch: braid_fetch } = require('../../http/page/vendor/braid-http-client.js')
// The page's diff: only what changed, so batched keystrokes never delete
// and re-insert the text between them.
const { text_patches } = require('../../http/page/diff.js')

const [url, token] = process.argv.slice(2)
const headers = { Authorization: 'Bearer ' + token, 'Merge-Type': 'simpleton' }
const peer = 'test-' + Math.random().toString(36).slice(2)
const say = o => process.stdout.write(JSON.stringify(o) + '\n')
const cps = s => Array.from(s)
const same = (a, b) => a.length === b.length && a.every((v, i) => v === b[i])

// The simpleton client: the version it holds, the text at it, its counter.
let version = [], state = '', counter = -1, outstanding = 0, pending = null, updates = 0, errors = []

braid_fetch(url, {
  subscribe: true, retry: true, multiplex: false, peer, headers, heartbeats: 5,
  parents: () => version.length ? version : null,
}).then(res => res.subscribe(u => {
  // An update applies only on the version held, and not over unsent edits.
  const parents = (u.parents || []).slice().sort()
  if (pending !== null || !same(version, parents)) return
  if (u.patches) {
    // All patches of one update are in the coordinates of its parents' text.
    const text = cps(state), out = []
    let at = 0
    for (const p of u.patches.map(p => ({ r: p.range.match(/\d+/g).map(Number), c: p.content_text })).sort((x, y) => x.r[0] - y.r[0])) {
      out.push(text.slice(at, p.r[0]).join(''), p.c)
      at = p.r[1]
    }
    out.push(text.slice(at).join(''))
    state = out.join('')
  } else state = u.body_text
  version = u.version.slice().sort()
  updates++
  say({ event: 'update', state, version })
}, e => { errors.push(String(e)); say({ event: 'error', error: String(e) }) }))
  .catch(e => { errors.push(String(e)); say({ event: 'error', error: String(e) }) })

function change (next) {
  if (outstanding < 10) send(next)
  else pending = next
}

// One PUT: the patches from the held text to `next`.
function send (next) {
  const patches = text_patches(state, next)
  for (const p of patches) counter += (p.range[1] - p.range[0]) + cps(p.content).length
  const mine = [`${peer}-${counter}`], parents = version
  version = mine
  state = next
  outstanding++
  braid_fetch(url, {
    method: 'PUT', version: mine, parents, peer, headers, retry: true, multiplex: false,
    patches: patches.map(p => ({ unit: 'text', range: `[${p.range[0]}:${p.range[1]}]`, content: p.content })),
  }).then(r => {
    outstanding--
    if (!r.ok) errors.push(`PUT ${r.status}`)
    if (pending !== null && outstanding < 10) { const p = pending; pending = null; send(p) }
  }, e => { outstanding--; errors.push(String(e)) })
}

let seed = 1
const rand = n => { seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5; return (seed >>> 0) % n }
const sleep = ms => new Promise(r => setTimeout(r, ms))

// Keystrokes at random places: each types 'x' after 'é' or an emoji (a
// code point beyond UTF-16's first plane), marks the test can count.
async function type (n) {
  for (let i = 0; i < n; i++) {
    const text = cps(pending ?? state)
    text.splice(rand(text.length + 1), 0, ['é', '😀'][rand(2)], 'x')
    change(text.join(''))
    await sleep(5 + rand(20))
  }
  say({ event: 'typed' })
}

require('readline').createInterface({ input: process.stdin }).on('line', line => {
  const c = JSON.parse(line)
  if (c.cmd === 'edit') {
    const t = cps(pending ?? state)
    t.splice(c.pos, c.del, ...cps(c.ins))
    change(t.join(''))
  } else if (c.cmd === 'type') {
    seed = c.seed || 1
    type(c.n)
  } else if (c.cmd === 'state') {
    say({ state: pending ?? state, version, outstanding, pending: pending !== null, updates, errors })
  } else if (c.cmd === 'quit') process.exit(0)
})
