// Counts the results of the HTTP cache test suite (npm `http-cache-tests`, the
// suite behind cache-tests.fyi) the way its own display does, prints one table
// side by side, and writes a to-do list of one cache's failures.
//
//   node summarize.mjs --pkg DIR [--summary FILE] [--failures NAME=FILE]
//                      NAME=results.json...
//
// DIR is the installed package (…/node_modules/http-cache-tests). Results files
// are the JSON the suite's `cli.mjs` prints: {test_id: true | [error_name, message]}.
//
// Classification mirrors determineTestResult() in the package's lib/display.mjs
// (that module cannot be imported under node: it loads browser assets):
//   - a test whose depends_on tests did not pass (pass or check "yes") is a
//     dependency failure, whatever its own result;
//   - a result ["Setup", …] is a setup failure (["Setup", "retry"]: a retry);
//   - otherwise by the test's `kind`: required (or no kind) → pass / fail,
//     optimal → pass / optional fail, check → yes / no.
// "failed required" is the display's ⛔️, "failed optional" its ⚠️.

import fs from 'node:fs'
import path from 'node:path'
import { pathToFileURL } from 'node:url'

const args = process.argv.slice(2)
let pkg
let summaryFile
const failureTargets = []
const inputs = []
for (let i = 0; i < args.length; i++) {
  const a = args[i]
  if (a === '--pkg') pkg = args[++i]
  else if (a === '--summary') summaryFile = args[++i]
  else if (a === '--failures') {
    const [name, file] = splitPair(args[++i])
    failureTargets.push({ name, file })
  } else inputs.push(splitPair(a))
}
if (!pkg || inputs.length === 0) {
  console.error('usage: node summarize.mjs --pkg DIR [--summary FILE] [--failures NAME=FILE] NAME=results.json...')
  process.exit(2)
}

function splitPair (s) {
  const eq = s.indexOf('=')
  if (eq < 1) {
    console.error(`expected NAME=FILE, got ${s}`)
    process.exit(2)
  }
  return [s.slice(0, eq), s.slice(eq + 1)]
}

// The same test list as the package's cli.mjs runs: tests/index.mjs plus,
// in 0.4.5, the Surrogate-Control suite (later revisions dropped it);
// browser_only tests are not run by the CLI.
const imp = rel => import(pathToFileURL(path.join(pkg, rel)).href).then(m => m.default)
const surrogate = fs.existsSync(path.join(pkg, 'tests/surrogate-control.mjs'))
  ? [await imp('tests/surrogate-control.mjs')]
  : []
const suites = [...await imp('tests/index.mjs'), ...surrogate]
const byId = new Map()
for (const suite of suites) {
  for (const test of suite.tests) {
    if (test.browser_only === true) continue
    byId.set(test.id, { test, suite })
  }
}

const PASS = 'pass'
const YES = 'yes'
const CATEGORIES = [
  ['pass', 'passed'],
  ['fail', 'failed required'],
  ['optional_fail', 'failed optional'],
  ['yes', 'check: yes'],
  ['no', 'check: no'],
  ['dependency_fail', 'dependency failed'],
  ['setup_fail', 'setup failed'],
  ['retry', 'retried'],
  ['harness_fail', 'harness failed'],
  ['untested', 'not run']
]

function classify (results, id, honorDependencies = true, seen = new Set()) {
  const { test } = byId.get(id) || {}
  const result = results[id]
  if (!test || result === undefined) return 'untested'
  if (honorDependencies && test.depends_on !== undefined && !seen.has(id)) {
    seen.add(id)
    for (const dep of test.depends_on) {
      const d = classify(results, dep, true, seen)
      if (d !== PASS && d !== YES) return 'dependency_fail'
    }
  }
  if (Array.isArray(result) && result[0] === 'Setup') {
    return result[1] === 'retry' ? 'retry' : 'setup_fail'
  }
  if (result === false) return 'harness_fail'
  const kind = test.kind || 'required'
  if (kind === 'required') return result === true ? PASS : 'fail'
  if (kind === 'optimal') return result === true ? PASS : 'optional_fail'
  if (kind === 'check') return result === true ? YES : 'no'
  throw new Error(`unknown test kind ${test.kind} (${id})`)
}

function count (results, honorDependencies) {
  const c = Object.fromEntries(CATEGORIES.map(([k]) => [k, 0]))
  for (const id of byId.keys()) c[classify(results, id, honorDependencies)]++
  return c
}

// Not an assertion or setup error: the client could not complete the exchange
// (connection reset, timeout, a TypeError in the harness). Counted inside the
// categories above (the display does so), reported on its own line.
function errored (results) {
  return [...byId.keys()].filter(id => {
    const r = results[id]
    return Array.isArray(r) && r[0] !== 'Assertion' && r[0] !== 'Setup'
  })
}

const rows = []
const summary = {}
for (const [name, file] of inputs) {
  const results = JSON.parse(fs.readFileSync(file, 'utf8'))
  const shown = count(results, true)
  const raw = count(results, false)
  const errs = errored(results)
  summary[name] = {
    results_file: path.basename(file),
    tests: byId.size,
    as_displayed: shown,
    ignoring_dependencies: raw,
    not_assertion_errors: errs.length
  }
  rows.push({ name, shown, raw, errs: errs.length })
}

const table = [
  ['', ...rows.map(r => r.name)],
  ...CATEGORIES.map(([k, label]) => [label, ...rows.map(r => String(r.shown[k]))]),
  ['required failed, deps ignored', ...rows.map(r => String(r.raw.fail))],
  ['optional failed, deps ignored', ...rows.map(r => String(r.raw.optional_fail))],
  ['passed, deps ignored', ...rows.map(r => String(r.raw.pass))],
  ['of all: exchange errors', ...rows.map(r => String(r.errs))],
  ['tests', ...rows.map(() => String(byId.size))]
]
const widths = table[0].map((_, i) => Math.max(...table.map(row => row[i].length)))
for (const [i, row] of table.entries()) {
  console.log(row.map((cell, j) => j === 0 ? cell.padEnd(widths[j]) : cell.padStart(widths[j])).join('  '))
  if (i === 0) console.log(widths.map(w => '-'.repeat(w)).join('  '))
}

if (summaryFile) fs.writeFileSync(summaryFile, JSON.stringify(summary, null, 2) + '\n')

// ---- the to-do list -------------------------------------------------------

const FEATURES = [
  ['Freshness (Cache-Control max-age / s-maxage, Expires)', ['cc-freshness', 'cc-parse', 'expires', 'expires-parse']],
  ['Age header', ['age-parse']],
  ['Heuristic freshness', ['heuristic']],
  ['Response directives (no-store, no-cache, private, must-revalidate, ...)', ['cc-response']],
  ['Request directives (Cache-Control, Pragma)', ['cc-request', 'pragma']],
  ['Serving stale', ['stale']],
  ['Vary', ['vary', 'vary-parse']],
  ['Conditional requests and revalidation (ETag, Last-Modified, 304 updates, HEAD)', ['conditional-lm', 'conditional-inm', 'update304', 'updateHEAD']],
  ['Invalidation (unsafe methods)', ['invalidation']],
  ['Stored / replayed header fields', ['headers']],
  ['Status codes and methods', ['status', 'method']],
  ['Authorization', ['auth']],
  ['Partial content (Range)', ['partial']],
  ['CDN-Cache-Control / Surrogate-Control', ['cdn-cache-control', 'surrogate-control']],
  ['Interim (1xx) responses', ['interim']],
  ['Other', ['other']]
]
const featureOf = new Map()
for (const [label, ids] of FEATURES) for (const id of ids) featureOf.set(id, label)

const EXPECTED_TYPE = {
  cached: 'served from cache (origin not asked)',
  not_cached: 'forwarded to origin (not from cache)',
  lm_validated: 'forwarded as a conditional request (If-Modified-Since)',
  etag_validated: 'forwarded as a conditional request (If-None-Match)'
}

function hdr (h) {
  let [name, value] = h
  if (typeof value === 'number' && /^(date|expires|last-modified|if-modified-since|if-unmodified-since)$/i.test(name)) {
    value = value === 0 ? 'now' : `now${value > 0 ? '+' : ''}${value}s`
  }
  return value === undefined ? name : `${name}: ${value}`
}

function describeRequest (r, n) {
  const parts = []
  let line = `${n}. ${r.request_method || 'GET'}`
  if (r.filename) line += ` /${r.filename}`
  if (r.query_arg) line += ` ?${r.query_arg}`
  if (r.request_headers && r.request_headers.length) line += ` [${r.request_headers.map(hdr).join('; ')}]`
  parts.push(line)
  const origin = []
  if (r.response_status) origin.push(r.response_status.join(' '))
  if (r.response_headers && r.response_headers.length) {
    origin.push(r.response_headers.map(h => r.magic_locations && /^(content-)?location$/i.test(h[0])
      ? `${h[0]}: <test URL>/${h[1] || ''}`
      : hdr(h)).join('; '))
  }
  if (r.response_body !== undefined) origin.push(`body ${JSON.stringify(String(r.response_body)).slice(0, 40)}`)
  if (r.disconnect) origin.push('drops the connection')
  if (origin.length) parts.push(`origin answers ${origin.join(', ')}`)
  const expect = []
  if (r.expected_type) expect.push(EXPECTED_TYPE[r.expected_type] || r.expected_type)
  if (r.expected_method) expect.push(`origin sees method ${r.expected_method}`)
  if (r.expected_status) expect.push(`status ${r.expected_status}`)
  if (r.expected_request_headers) expect.push(`origin sees ${r.expected_request_headers.map(hdr).join('; ')}`)
  if (r.expected_response_headers) {
    expect.push(`client sees ${r.expected_response_headers.map(h => typeof h === 'string' ? h : h.length > 2 ? `${h[0]} ${h[1]} ${h[2]}` : hdr(h)).join('; ')}`)
  }
  if (r.expected_response_headers_missing) {
    expect.push(`client does not see ${r.expected_response_headers_missing.map(h => typeof h === 'string' ? h : hdr(h)).join('; ')}`)
  }
  if (r.expected_response_text !== undefined) expect.push(`body ${JSON.stringify(String(r.expected_response_text)).slice(0, 40)}`)
  if (expect.length) parts.push(`expect ${expect.join(', ')}`)
  if (r.setup) parts.push('(setup step)')
  else if (r.setup_tests) parts.push(`(setup checks: ${r.setup_tests.join(', ')})`)
  if (r.pause_after) parts.push('then wait 3 s')
  return parts.join(' | ')
}

const SECTIONS = [
  ['fail', 'REQUIRED tests that fail (kind required; ⛔️ on cache-tests.fyi when their dependencies pass)'],
  ['optional_fail', 'OPTIMAL tests that fail (kind optimal: the cache could have reused or stored more; ⚠️)'],
  ['setup_fail', 'SETUP failures (a setup step of the test did not behave, so the test itself could not run; 🔹)'],
  ['retry', 'RETRIES (the cache sent the same request twice; ↻)'],
  ['no', 'CHECKS answered "no" (kind check: informational, not a failure; but see freshness-none)']
]

function failureList (name, results) {
  const out = []
  const total = count(results, true)
  const raw = count(results, false)
  out.push(`# ${name}: HTTP cache test suite failures (npm http-cache-tests)`)
  out.push('#')
  out.push(`# ${byId.size} tests. As cache-tests.fyi counts them (depends_on honoured): ` +
    `${total.pass} passed, ${total.fail} failed required, ${total.optional_fail} failed optional, ` +
    `${total.dependency_fail} dependency failed, ${total.setup_fail} setup failed.`)
  out.push(`# Ignoring depends_on (what each test does on its own): ${raw.pass} passed, ` +
    `${raw.fail} failed required, ${raw.optional_fail} failed optional, ${raw.setup_fail} setup failed, ` +
    `${raw.no} checks "no".`)
  out.push('#')
  out.push('# Grouped below by outcome, then feature. Each entry: test id, kind, what the suite')
  out.push('# calls it, why it failed in this run, and the exchange it plays (request n: what the')
  out.push('# client sends; what the test origin answers; what is expected). "blocked by:" names')
  out.push('# the failing tests it depends on (directly or through a chain): on cache-tests.fyi it')
  out.push('# shows as ⚪️ until those pass. Run one test alone with its exchange dumped:')
  out.push('#   bench/http-cache-tests.sh --id TEST_ID leafcache')
  // The tests that fail on their own and so hide, through depends_on chains,
  // the tests that need them: each one fixed shows its dependents' real result.
  const ok = c => c === PASS || c === YES
  const roots = (id, seen = new Set()) => {
    const found = new Set()
    for (const dep of byId.get(id).test.depends_on || []) {
      if (seen.has(dep)) continue
      seen.add(dep)
      if (!ok(classify(results, dep, false))) found.add(dep)
      else if (!ok(classify(results, dep))) for (const r of roots(dep, seen)) found.add(r)
    }
    return found
  }
  const blockers = new Map()
  for (const id of byId.keys()) {
    if (classify(results, id) !== 'dependency_fail') continue
    for (const dep of roots(id)) blockers.set(dep, (blockers.get(dep) || 0) + 1)
  }
  if (blockers.size) {
    out.push('')
    out.push('## Start here: failing tests that others depend on (n = tests shown ⚪️ because of it)')
    out.push('')
    for (const [dep, n] of [...blockers].sort((a, b) => b[1] - a[1])) {
      const { test } = byId.get(dep)
      out.push(`- ${dep} [${test.kind || 'required'}] blocks ${n}: ${test.name.replace(/\s+/g, ' ')}`)
    }
  }
  for (const [cat, title] of SECTIONS) {
    const items = [...byId.keys()].filter(id => classify(results, id, false) === cat)
    if (!items.length) continue
    out.push('')
    out.push(`## ${title}: ${items.length}`)
    for (const [label] of FEATURES) {
      const inFeature = items.filter(id => (featureOf.get(byId.get(id).suite.id) ?? 'Other') === label)
      if (!inFeature.length) continue
      out.push('')
      out.push(`### ${label} (${inFeature.length})`)
      for (const id of inFeature) {
        const { test, suite } = byId.get(id)
        const r = results[id]
        const deps = [...roots(id)]
        out.push('')
        out.push(`- ${id}  [${test.kind || 'required'}; suite ${suite.id}]`)
        out.push(`  ${test.name.replace(/\s+/g, ' ')}`)
        if (Array.isArray(r)) out.push(`  result: ${r[0]}: ${r[1]}`)
        if (deps.length) out.push(`  blocked by: ${deps.join(', ')} (shown ⚪️ until that passes)`)
        test.requests.forEach((req, i) => out.push(`    ${describeRequest(req, i + 1)}`))
      }
    }
  }
  return out.join('\n') + '\n'
}

for (const { name, file } of failureTargets) {
  const input = inputs.find(([n]) => n === name)
  if (!input) {
    console.error(`--failures ${name}: no results given for ${name}`)
    process.exit(2)
  }
  const results = JSON.parse(fs.readFileSync(input[1], 'utf8'))
  fs.writeFileSync(file, failureList(name, results))
}
