// The patches from one text to another, for an editor that sends what
// changed since its last PUT (several keystrokes when the network lagged).
// A single common-prefix-and-suffix patch would delete and re-insert the
// text between two keystrokes, and the server would then keep a peer's
// line typed there concurrently outside the re-inserted copy, splitting
// the text around it. So the difference is found character by character
// (Myers' O(ND) diff over code points), and only what was really deleted
// or inserted is sent. Patches are in the old text's coordinates, sorted,
// as Braid's `Content-Range: text [a:b]`.
'use strict'

function text_patches (old_text, new_text) {
  const a = Array.from(old_text), b = Array.from(new_text)
  let pre = 0
  while (pre < a.length && pre < b.length && a[pre] === b[pre]) pre++
  let suf = 0
  while (suf < a.length - pre && suf < b.length - pre && a[a.length - 1 - suf] === b[b.length - 1 - suf]) suf++
  const A = a.slice(pre, a.length - suf), B = b.slice(pre, b.length - suf)
  if (!A.length && !B.length) return []
  const whole = [{ range: [pre, pre + A.length], content: B.join('') }]
  const n = A.length, m = B.length, max = n + m
  // Beyond this many differences a diff costs more than it saves.
  const limit = Math.min(max, 2000)
  const off = max + 1
  const v = new Int32Array(2 * max + 3)
  const trace = []
  let found = -1
  for (let d = 0; d <= limit && found < 0; d++) {
    trace.push(v.slice(off - d - 1, off + d + 2))
    for (let k = -d; k <= d; k += 2) {
      let x = (k === -d || (k !== d && v[off + k - 1] < v[off + k + 1])) ? v[off + k + 1] : v[off + k - 1] + 1
      let y = x - k
      while (x < n && y < m && A[x] === B[y]) { x++; y++ }
      v[off + k] = x
      if (x >= n && y >= m) { found = d; break }
    }
  }
  if (found < 0) return whole
  // Walk back from the end: each step is one deletion or insertion.
  const ops = []   // [kind, position in A, code point]
  let x = n, y = m
  for (let d = found; d > 0; d--) {
    const t = trace[d]                         // v before step d
    const at = k => t[k + d + 1]
    const k = x - y
    const down = k === -d || (k !== d && at(k - 1) < at(k + 1))
    const pk = down ? k + 1 : k - 1
    const px = at(pk), py = px - pk
    while (x > px && y > py) { x--; y-- }     // equal characters
    ops.push(down ? ['ins', px, B[py]] : ['del', px, A[px]])
    x = px; y = py
  }
  ops.reverse()
  // Runs of neighbouring operations become one patch each.
  const patches = []
  for (const [kind, pos, ch] of ops) {
    const p = patches[patches.length - 1]
    const start = pre + pos
    if (p && p.range[1] === start) {
      if (kind === 'del') p.range[1]++
      else p.content += ch
    } else if (kind === 'del') patches.push({ range: [start, start + 1], content: '' })
    else patches.push({ range: [start, start], content: ch })
  }
  return patches
}

if (typeof module !== 'undefined' && module.exports) module.exports = { text_patches }
