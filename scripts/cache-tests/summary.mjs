// Prints fusebox's results in the HTTP caching test suite (cache-tests.fyi)
// beside the suite's published results for reverse proxies: required tests
// passed, failed, and not run (a setup or harness failure, or a test whose
// prerequisite failed), then every required test fusebox did not pass, by
// group.
//
//   node summary.mjs <suite directory> <fusebox results .json>

import fs from 'fs'
import path from 'path'
import { pathToFileURL } from 'url'

const [suiteDir, ownFile] = process.argv.slice(2)
const load = async (...parts) => (await import(pathToFileURL(path.join(suiteDir, ...parts)).href)).default
const engine = fs.existsSync(path.join(suiteDir, 'test-engine')) ? 'test-engine' : '.'
const suites = await load('tests', 'index.mjs')
const { determineTestResult } = await import(pathToFileURL(path.join(suiteDir, engine, 'lib', 'results.mjs')).href)
const published = await load('results', 'index.mjs')

const required = []
for (const suite of suites) {
  for (const test of suite.tests) {
    if ((test.kind ?? 'required') === 'required' && test.browser_only !== true) {
      required.push({ suite, test })
    }
  }
}

// Result symbols from the suite's own table: index 2 is the plain-text one.
function outcome (results, id) {
  const symbol = determineTestResult(suites, id, results)[2]
  if (symbol === '✅') return 'pass'
  if (symbol === '⛔️') return 'fail'
  return 'not run'
}

function tally (results) {
  const t = { pass: 0, fail: 0, 'not run': 0 }
  for (const { test } of required) t[outcome(results, test.id)] += 1
  return t
}

const own = JSON.parse(fs.readFileSync(ownFile, 'utf8'))
const rows = [['fusebox (this run)', tally(own)]]
for (const impl of published) {
  if (impl.type !== 'rev-proxy' && impl.type !== 'cdn') continue
  const file = path.join(suiteDir, 'results', impl.file)
  if (!fs.existsSync(file)) continue
  const results = JSON.parse(fs.readFileSync(file, 'utf8'))
  rows.push([`${impl.name} ${impl.version ?? ''}`.trim(), tally(results)])
}

console.log(`Required tests: ${required.length}\n`)
console.log('| cache | pass | fail | not run |')
console.log('|---|---|---|---|')
for (const [name, t] of rows) {
  console.log(`| ${name} | ${t.pass} | ${t.fail} | ${t['not run']} |`)
}

console.log('\nRequired tests fusebox did not pass:\n')
for (const { suite, test } of required) {
  const o = outcome(own, test.id)
  if (o === 'pass') continue
  const detail = Array.isArray(own[test.id]) ? ` (${own[test.id].slice(0, 2).join(': ')})` : ''
  console.log(`- ${suite.id} / ${test.id}: ${o}${detail}`)
}
