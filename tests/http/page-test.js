// The web page in headless Chromium (playwright-core): two browsers type
// into one file's editor while the test saves the file on a peer's disk.
// Prints JSON lines: ready; typed (keystrokes that reached each editor,
// and those that went nowhere); then the editors' texts when asked.
//
//   NODE_PATH=DIR_WITH_playwright-core node page-test.js PAGE_URL FILE_NAME SECONDS
'use strict'
const { chromium } = require('playwright-core')
const [url, file, seconds] = process.argv.slice(2)

async function editor (browser) {
  const p = await browser.newPage()
  const errors = []
  p.on('pageerror', e => errors.push(e.message))
  // Every PUT must be taken (a refused one is a lost keystroke).
  p.on('response', r => { if (r.request().method() === 'PUT' && r.status() !== 200) errors.push(`PUT ${r.status()}`) })
  await p.goto(url)
  await p.click(`text=${file}`)
  await p.waitForFunction(() => !document.getElementById('editor').disabled)
  return { p, errors }
}

;(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  })
  const eds = [await editor(browser), await editor(browser)]
  console.log(JSON.stringify({ event: 'ready' }))
  // Each types its own marks at random places for a while.
  const end = Date.now() + 1000 * Number(seconds)
  let typed = [0, 0]
  let missed = [0, 0]
  await Promise.all(eds.map(async ({ p }, i) => {
    while (Date.now() < end) {
      const len = (await p.inputValue('#editor')).length
      const at = Math.floor(Math.random() * (len + 1))
      await p.evaluate(at => { const t = document.getElementById('editor'); t.focus(); t.setSelectionRange(at, at) }, at)
      // A synthetic keystroke now and then goes nowhere (the two pages
      // share one browser's focus): counted are those in the editor.
      const mark = i === 0 ? 'A' : 'B'
      const before = (await p.inputValue('#editor')).split(mark).length
      await p.keyboard.type(mark, { delay: 5 })
      if ((await p.inputValue('#editor')).split(mark).length > before) typed[i]++
      else missed[i]++
      await p.waitForTimeout(20 + Math.random() * 40)
    }
  }))
  // Settled: nothing on its way (the page says "saved"), then read both.
  await Promise.all(eds.map(({ p }) => p.waitForFunction(() => document.getElementById('file-state').textContent.startsWith('saved') ||
    document.getElementById('file-state').textContent.startsWith('live'), null, { timeout: 20000 })))
  console.log(JSON.stringify({ event: 'typed', typed, missed }))
  // Each line on stdin asks for the editors' texts; "history" views the
  // file's first version on the first page and restores it; "quit" ends.
  require('readline').createInterface({ input: process.stdin }).on('line', async line => {
    if (line === 'quit') { await browser.close(); process.exit(0) }
    if (line === 'history') {
      const { p } = eds[0]
      await p.click('#history-button')
      const first = p.locator('#versions tr').last()
      await first.locator('text=view').click()
      await p.waitForFunction(() => document.getElementById('old').textContent !== '')
      const viewed = await p.textContent('#old')
      await first.locator('text=restore').click()
      await p.waitForFunction(() => /restored/.test(document.getElementById('old').textContent))
      console.log(JSON.stringify({ event: 'history', viewed, said: await p.textContent('#old') }))
      return
    }
    const texts = await Promise.all(eds.map(({ p }) => p.inputValue('#editor')))
    const states = await Promise.all(eds.map(({ p }) => p.textContent('#file-state')))
    console.log(JSON.stringify({ event: 'texts', texts, states, errors: eds.flatMap(e => e.errors) }))
  })
})().catch(e => { console.log(JSON.stringify({ event: 'error', error: String(e) })); process.exit(1) })
