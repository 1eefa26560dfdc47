// The page's diff (http/page/diff.js) on random texts: its patches take
// the old text to the new one, never overlap, and an insertion alone is
// sent as insertions (never a deletion and a re-insertion of what lay
// between). Exits non-zero on the first failure.
'use strict'
const { text_patches } = require('../../http/page/diff.js')

function apply (text, patches) {
  const a = Array.from(text), out = []
  let at = 0
  for (const p of patches) { out.push(a.slice(at, p.range[0]).join(''), p.content); at = p.range[1] }
  out.push(a.slice(at).join(''))
  return out.join('')
}

let seed = 7
const rand = n => { seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5; return (seed >>> 0) % n }
const alphabet = Array.from('abxé😀\n')
const fail = why => { console.error('FAIL:', why); process.exit(1) }
for (let i = 0; i < 20000; i++) {
  const a = Array.from({ length: rand(30) }, () => alphabet[rand(alphabet.length)])
  const b = a.slice()
  const inserts_only = rand(2) === 0
  for (let j = rand(6); j > 0; j--) {
    const p = rand(b.length + 1)
    if (!inserts_only && rand(3) === 0 && b.length) b.splice(Math.min(p, b.length - 1), 1)
    else b.splice(p, 0, alphabet[rand(alphabet.length)])
  }
  const [old_text, new_text] = [a.join(''), b.join('')]
  const ps = text_patches(old_text, new_text)
  if (apply(old_text, ps) !== new_text) fail(JSON.stringify({ old_text, new_text, ps }))
  for (let q = 1; q < ps.length; q++) if (ps[q].range[0] < ps[q - 1].range[1]) fail('overlap ' + JSON.stringify(ps))
  if (inserts_only && ps.some(p => p.range[0] !== p.range[1])) fail('a deletion for insertions ' + JSON.stringify({ old_text, new_text, ps }))
}
console.log('ok: 20000 random edits')
