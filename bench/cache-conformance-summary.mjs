// Summarises one run of the cache-tests suite for a reverse proxy:
//
//   node cache-conformance-summary.mjs SUITE_DIR LABEL RESULTS.json
//
// Counts the tests a reverse proxy runs (all but the browser-only ones) by
// kind (required, optimal, check) and outcome, with the suite's own rules
// (a test whose dependency did not pass counts as a dependency failure),
// then lists the required tests that did not pass, with the suite's message.

import fs from 'fs'
import path from 'path'
import { pathToFileURL } from 'url'

const [suiteDir, label, resultsFile] = process.argv.slice(2)
if (!resultsFile) {
  console.error('usage: cache-conformance-summary.mjs SUITE_DIR LABEL RESULTS.json')
  process.exit(2)
}

const load = rel => import(pathToFileURL(path.join(suiteDir, rel)).href)
const suites = (await load('tests/index.mjs')).default
const { determineTestResult, resultTypes } = await load('test-engine/lib/results.mjs')
const results = JSON.parse(fs.readFileSync(resultsFile, 'utf8'))

const outcomeName = new Map(Object.entries(resultTypes).map(([k, v]) => [v, k]))
const counts = { required: {}, optimal: {}, check: {} }
const failures = []

for (const suite of suites) {
  for (const test of suite.tests) {
    if (test.browser_only === true) continue
    const kind = test.kind || 'required'
    const outcome = outcomeName.get(determineTestResult(suites, test.id, results))
    counts[kind][outcome] = (counts[kind][outcome] || 0) + 1
    if (kind === 'required' && outcome !== 'pass') {
      const detail = results[test.id] === undefined ? '' : results[test.id][1] || ''
      failures.push(`  ${outcome.padEnd(16)} ${test.id}: ${String(detail).slice(0, 160)}`)
    }
  }
}

const total = c => Object.values(c).reduce((a, b) => a + b, 0)
const passed = (c, k) => (c.pass || 0) + (k === 'check' ? c.yes || 0 : 0)
console.log(`== ${label}`)
for (const kind of ['required', 'optimal', 'check']) {
  const c = counts[kind]
  const rest = Object.entries(c).filter(([k]) => k !== 'pass' && !(kind === 'check' && k === 'yes'))
    .map(([k, v]) => `${k} ${v}`).join(', ')
  console.log(`${kind.padEnd(9)} ${String(passed(c, kind)).padStart(3)} of ${total(c)}` +
    `${kind === 'check' ? ' yes' : ' pass'} (${rest})`)
}
if (failures.length) {
  console.log('required tests not passed:')
  console.log(failures.join('\n'))
}
