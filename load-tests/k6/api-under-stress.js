// k6 twin of the Gatling simulation apihammer.ApiUnderStress
// (load-tests/gatling/src/test/java/apihammer/ApiUnderStress.java): same scenarios, same
// injection profile, same count check. One k6 iteration is one Gatling virtual user.
//
//   python3 load-tests/feeders/generate.py   # once: the feeders this script open()s
//   k6 run -e PROFILE=short -e GATEWAY_URL=http://127.0.0.1:9999 load-tests/k6/api-under-stress.js
//   (load-tests/k6/run.sh [full|short] does that, keeps the log and checks the result)
//
// Settings (-e NAME=value or the environment):
//   GATEWAY_URL   default http://127.0.0.1:9999
//   PROFILE       full (default) or short: the same shape, every phase 15% as long and the
//                 ramps going to 20% of the peak rates (TIME_SCALE / PEAK_SCALE of the simulation).
//                 Gatling's peak profile has no k6 twin: PROFILE=peak is rejected.
//   SUMMARY_JSON  optional: also write handleSummary's raw data to this file
//
// Where it differs from Gatling, by necessity:
//   * Arrival-rate executors start an iteration only if a VU is free: once maxVUs are busy,
//     k6 drops iterations (metric dropped_iterations) where Gatling would start the user
//     anyway. The threshold dropped_iterations count==0 makes that a failed run.
//   * Gatling's ".randomized()" 5 users/s phase has no k6 equivalent: k6 spreads them evenly.
//   * The count check starts 3 s after the creation phases' scheduled end, not 3 s after the
//     last creation user finished (k6 lets running iterations finish, up to gracefulStop).
//   * VU code cannot read metric totals, so the count check (before + 201s == after) is
//     decided in handleSummary: it prints the COUNT CHECK line but cannot change k6's exit
//     code. run.sh fails the run unless that line ends in "-> OK".
import http from 'k6/http';
import { check, sleep } from 'k6';
import { SharedArray } from 'k6/data';
import { Counter, Gauge } from 'k6/metrics';
import exec from 'k6/execution';

const GATEWAY_URL = (__ENV.GATEWAY_URL || 'http://127.0.0.1:9999').replace(/\/+$/, '');
const PROFILE = __ENV.PROFILE || 'full';
if (PROFILE !== 'full' && PROFILE !== 'short') {
  throw new Error(`PROFILE must be full or short, not ${PROFILE}`);
}
const SHORT = PROFILE === 'short';
const TIME_SCALE = SHORT ? 0.15 : 1;
const PEAK_SCALE = SHORT ? 0.2 : 1;

/** A full-profile duration in seconds, scaled, in whole milliseconds (as the simulation). */
function scaledMs(fullProfileSeconds) {
  return Math.round(fullProfileSeconds * TIME_SCALE * 1000);
}

/** A full-profile peak rate, scaled (k6 rates are integers). */
function peak(fullProfileRate) {
  return Math.round(fullProfileRate * PEAK_SCALE);
}

// ---- feeders ------------------------------------------------------------------------------

/**
 * RFC 4180 CSV: fields separated by commas, records by LF or CRLF; a quoted field may hold
 * commas, line breaks and doubled quotes. Returns an array of records (arrays of strings).
 */
function parseCsv(text) {
  const records = [];
  const n = text.length;
  let i = text.charCodeAt(0) === 0xfeff ? 1 : 0; // byte order mark
  let record = [];
  while (i < n) {
    if (text.charCodeAt(i) === 34 /* " */) {
      const parts = [];
      let from = i + 1;
      for (;;) {
        const quote = text.indexOf('"', from);
        if (quote < 0) throw new Error(`CSV: unterminated quoted field at offset ${i}`);
        if (text.charCodeAt(quote + 1) === 34) {
          parts.push(text.slice(from, quote + 1)); // "" is one quote
          from = quote + 2;
        } else {
          parts.push(text.slice(from, quote));
          i = quote + 1;
          break;
        }
      }
      record.push(parts.join(''));
    } else {
      let end = i;
      for (; end < n; end++) {
        const c = text.charCodeAt(end);
        if (c === 44 || c === 10 || c === 13) break; // , \n \r
      }
      record.push(text.slice(i, end));
      i = end;
    }
    if (i >= n) break;
    const c = text.charCodeAt(i);
    if (c === 44) {
      i += 1;
      if (i === n) record.push(''); // a trailing comma ends with an empty field
      continue;
    }
    if (c === 13 && text.charCodeAt(i + 1) === 10) i += 2;
    else if (c === 10 || c === 13) i += 1;
    else throw new Error(`CSV: unexpected character after a quoted field at offset ${i}`);
    records.push(record);
    record = [];
  }
  if (record.length > 0) records.push(record);
  return records;
}

/** One column of a CSV file with a header line, blank lines skipped. */
function csvColumn(path, column) {
  const records = parseCsv(open(path));
  const header = records.length > 0 ? records[0] : [];
  const index = header.indexOf(column);
  if (index < 0) throw new Error(`${path}: no column "${column}" in header ${JSON.stringify(header)}`);
  const values = [];
  for (let r = 1; r < records.length; r++) {
    const record = records[r];
    if (record.length === 1 && record[0] === '') continue;
    if (index >= record.length) throw new Error(`${path}: record ${r + 1} has no "${column}"`);
    values.push(record[index]);
  }
  if (values.length === 0) throw new Error(`${path}: no data (run load-tests/feeders/generate.py)`);
  return values;
}

// open() runs inside the SharedArray callbacks: the files are read and parsed once, not once
// per VU. Paths are relative to this script.
const RESOURCES = '../gatling/src/test/resources';
const WARRIORS = new SharedArray('warriors', () => csvColumn(`${RESOURCES}/warriors.csv`, 'payload'));
const TERMS = new SharedArray('terms', () => csvColumn(`${RESOURCES}/terms.csv`, 'term'));

// ---- injection profile --------------------------------------------------------------------

/** Gatling's constantUsersPerSec(rate).during(seconds). */
function constant(rate, fullProfileSeconds) {
  return { rate, ms: scaledMs(fullProfileSeconds) };
}

/** Gatling's rampUsersPerSec(from).to(to).during(seconds). */
function ramp(from, to, fullProfileSeconds) {
  return { from, to, ms: scaledMs(fullProfileSeconds) };
}

// Iterations before each scenario's first one, so that the phases of one Gatling scenario
// read the feeder as one circular feeder (ramps: their expected number of iterations).
const FEED_OFFSET = {};

/**
 * One k6 scenario per injection step, started one after the other (startTime), all running
 * the same function. Returns the scenarios and the time the last step ends, in ms.
 */
function injectOpen(prefix, execName, steps) {
  const scenarios = {};
  let startMs = 0;
  let iterations = 0;
  steps.forEach((step, index) => {
    const name = `${prefix}_${index + 1}`;
    const common = { exec: execName, startTime: `${startMs}ms`, timeUnit: '1s' };
    if (step.rate !== undefined) {
      const vus = Math.max(5, Math.ceil(step.rate / 2));
      scenarios[name] = Object.assign(common, {
        executor: 'constant-arrival-rate',
        rate: step.rate,
        duration: `${step.ms}ms`,
        preAllocatedVUs: vus,
        maxVUs: Math.max(50, vus * 10),
      });
      FEED_OFFSET[name] = iterations;
      iterations += Math.round((step.rate * step.ms) / 1000);
    } else {
      // 1,000 iterations/s at 10-50 ms each keep 10-50 VUs busy; maxVUs allows ~2 s each, since
      // at the full profile's peak Gatling counts up to ~1,800 users of one scenario in flight.
      scenarios[name] = Object.assign(common, {
        executor: 'ramping-arrival-rate',
        startRate: step.from,
        stages: [{ target: step.to, duration: `${step.ms}ms` }],
        preAllocatedVUs: Math.max(10, Math.ceil(step.to / 20)),
        maxVUs: Math.max(50, step.to * 2),
      });
      FEED_OFFSET[name] = iterations;
      iterations += Math.round((((step.from + step.to) / 2) * step.ms) / 1000);
    }
    startMs += step.ms;
  });
  return { scenarios, endMs: startMs };
}

const creationPhases = injectOpen('creation_and_lookup', 'creationAndLookup', [
  constant(2, 10),
  constant(5, 15), // .randomized() in Gatling
  ramp(4, peak(1000), 300),
]);
const validLookupPhases = injectOpen('valid_look_up', 'validLookup', [
  constant(10, 75),
  ramp(8, peak(1000), 600),
]);
const invalidLookupPhases = injectOpen('invalid_look_up', 'invalidLookup', [
  constant(8, 45),
  ramp(6, peak(400), 300),
]);

/** Per request name (Gatling's request names): the submetrics the summary reads. */
const REQUEST_NAMES = ['count before', 'count after', 'create', 'lookup', 'search', 'search without term'];

function perRequestThresholds() {
  // Always-true thresholds: they only make k6 keep these submetrics for handleSummary.
  const thresholds = {};
  REQUEST_NAMES.forEach((name) => {
    thresholds[`http_reqs{name:${name}}`] = ['count>=0'];
    thresholds[`http_req_failed{name:${name}}`] = ['rate>=0'];
    thresholds[`http_req_duration{name:${name}}`] = ['max>=0'];
  });
  return thresholds;
}

export const options = {
  scenarios: Object.assign({}, creationPhases.scenarios, validLookupPhases.scenarios, invalidLookupPhases.scenarios, {
    // Gatling: creation and lookup .andThen(count check), which pauses 3 s first.
    count_check: {
      executor: 'shared-iterations',
      exec: 'countCheck',
      vus: 1,
      iterations: 1,
      startTime: `${creationPhases.endMs + 3000}ms`,
      maxDuration: '60s',
    },
  }),
  thresholds: Object.assign(
    {
      checks: ['rate==1'],
      // 400 and 422 are expected answers: every request declares its expected statuses.
      http_req_failed: ['rate==0'],
      dropped_iterations: ['count==0'],
    },
    perRequestThresholds(),
  ),
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(95)', 'p(99)', 'count'],
  userAgent: 'api-hammer-k6',
  // Gatling gives each virtual user its own connections: one k6 iteration = one user.
  noVUConnectionReuse: true,
  // Only the counts are read; other bodies are dropped (see responseType below).
  discardResponseBodies: true,
  // The default system tags without `url`: every lookup has its own URL, and a tag value per
  // warrior would make hundreds of thousands of time series. Requests are told apart by `name`.
  systemTags: [
    'proto', 'subproto', 'status', 'method', 'name', 'group', 'check', 'error', 'error_code',
    'tls_version', 'scenario', 'service', 'expected_response',
  ],
};

// ---- requests -----------------------------------------------------------------------------

const warriorsCreated = new Counter('warriors_created');
const countBefore = new Gauge('count_before');
const countAfter = new Gauge('count_after');
const countAtEnd = new Gauge('count_at_end');

const CREATE_STATUSES = [201, 422, 400];
const EXPECT_CREATE = http.expectedStatuses(201, 422, 400);
const EXPECT_2XX = http.expectedStatuses({ min: 200, max: 299 });
const EXPECT_200 = http.expectedStatuses(200);
const EXPECT_400 = http.expectedStatuses(400);

function params(name, expected, extra) {
  return Object.assign(
    {
      headers: { Accept: 'application/json' },
      tags: { name },
      responseCallback: expected,
    },
    extra || {},
  );
}

/** Row of a circular feeder for the current iteration, counted across a scenario's phases. */
function feed(rows) {
  const offset = FEED_OFFSET[exec.scenario.name] || 0;
  return rows[(offset + exec.scenario.iterationInTest) % rows.length];
}

/** GET /counting-warriors under request name `name`: the count, or null if there is none. */
function readCount(name) {
  const res = http.get(`${GATEWAY_URL}/counting-warriors`, params(name, EXPECT_200, { responseType: 'text' }));
  let count = null;
  if (res.status === 200) {
    try {
      const body = JSON.parse(res.body);
      if (typeof body.count === 'number') count = body.count;
    } catch (e) {
      // not JSON: no count
    }
  }
  return { res, count };
}

export function setup() {
  const { res, count } = readCount('count before');
  if (count === null) {
    throw new Error(`count before: GET /counting-warriors answered ${res.status} ${res.body}`);
  }
  return { countBefore: count };
}

// Gatling: "creation and lookup".
export function creationAndLookup() {
  const res = http.post(
    `${GATEWAY_URL}/warrior`,
    feed(WARRIORS), // the body as is
    params('create', EXPECT_CREATE, { headers: { Accept: 'application/json', 'Content-Type': 'application/json' } }),
  );
  const created = res.status === 201;
  const location = created ? res.headers.Location : undefined;
  check(res, { 'create: status is 201, 422 or 400': (r) => CREATE_STATUSES.indexOf(r.status) >= 0 });
  if (created) {
    warriorsCreated.add(1);
    check(res, { 'create: 201 has a Location': () => Boolean(location) });
  }
  sleep((1 + Math.random() * 29) / 1000); // pause 1-30 ms
  if (location) {
    const url = /^https?:\/\//.test(location) ? location : `${GATEWAY_URL}${location}`;
    const read = http.get(url, params('lookup', EXPECT_2XX));
    check(read, { 'lookup: status is 2xx': (r) => r.status >= 200 && r.status < 300 });
  }
}

// Gatling: "valid look up".
export function validLookup() {
  const res = http.get(`${GATEWAY_URL}/warrior?t=${encodeURIComponent(feed(TERMS))}`, params('search', EXPECT_200));
  check(res, { 'search: status is 200': (r) => r.status === 200 });
}

// Gatling: "invalid look up".
export function invalidLookup() {
  const res = http.get(`${GATEWAY_URL}/warrior`, params('search without term', EXPECT_400));
  check(res, { 'search without term: status is 400': (r) => r.status === 400 });
}

// Gatling: "count check", once creation is over.
export function countCheck(data) {
  countBefore.add(data.countBefore);
  const { res, count } = readCount('count after');
  check(res, { 'count: status is 200 with a count': () => count !== null });
  if (count !== null) countAfter.add(count);
}

// Gatling's after(): a second reading once everything stopped, to tell projection lag from
// lost writes (printed by handleSummary).
export function teardown() {
  const { count } = readCount('count at end');
  if (count !== null) countAtEnd.add(count);
}

// ---- summary ------------------------------------------------------------------------------

function value(metrics, name, field) {
  const metric = metrics[name];
  if (!metric || !metric.values || metric.values[field] === undefined) return null;
  return metric.values[field];
}

function pad(text, width, right) {
  const s = String(text);
  const fill = width > s.length ? ' '.repeat(width - s.length) : '';
  return right ? fill + s : s + fill;
}

function millis(v) {
  if (v === null) return '-';
  return v < 10 ? v.toFixed(1) : String(Math.round(v));
}

export function handleSummary(data) {
  const m = data.metrics;
  const lines = [];
  const seconds = data.state && data.state.testRunDurationMs ? data.state.testRunDurationMs / 1000 : null;
  lines.push(`==== k6 ${PROFILE} profile against ${GATEWAY_URL}${seconds ? `, ${Math.round(seconds)}s` : ''} ====`);

  const header = ['request', 'total', 'failed', 'p50', 'p95', 'p99', 'max'];
  const widths = [22, 9, 8, 7, 7, 7, 7];
  const row = (cells) => cells.map((c, i) => pad(c, widths[i], i > 0)).join(' ');
  lines.push(row(header) + '  (ms)');
  const figures = (suffix) => [
    value(m, `http_reqs${suffix}`, 'count') || 0,
    value(m, `http_req_failed${suffix}`, 'passes') || 0,
    millis(value(m, `http_req_duration${suffix}`, 'med')),
    millis(value(m, `http_req_duration${suffix}`, 'p(95)')),
    millis(value(m, `http_req_duration${suffix}`, 'p(99)')),
    millis(value(m, `http_req_duration${suffix}`, 'max')),
  ];
  lines.push(row(['all'].concat(figures(''))));
  REQUEST_NAMES.forEach((name) => lines.push(row([name].concat(figures(`{name:${name}}`)))));

  const checksPassed = value(m, 'checks', 'passes') || 0;
  const checksFailed = value(m, 'checks', 'fails') || 0;
  lines.push(`checks: ${checksPassed} passed, ${checksFailed} failed`);
  const failedChecks = ((data.root_group && data.root_group.checks) || []).filter((c) => c.fails > 0);
  failedChecks.forEach((c) => lines.push(`  failed check "${c.name}": ${c.fails} of ${c.passes + c.fails}`));
  lines.push(
    `iterations: ${value(m, 'iterations', 'count') || 0}, dropped: ${value(m, 'dropped_iterations', 'count') || 0}` +
      `, max VUs: ${value(m, 'vus_max', 'max') || 0}`,
  );
  Object.keys(m).forEach((name) => {
    const thresholds = m[name].thresholds || {};
    Object.keys(thresholds).forEach((source) => {
      if (!thresholds[source].ok) lines.push(`threshold failed: ${name} ${source}`);
    });
  });

  // Same line as the Gatling simulation's.
  let before = value(m, 'count_before', 'value');
  if (before === null) before = data.setup_data && typeof data.setup_data.countBefore === 'number' ? data.setup_data.countBefore : -1;
  const created = value(m, 'warriors_created', 'count') || 0;
  const expected = before + created;
  const actual = value(m, 'count_after', 'value');
  lines.push(
    `COUNT CHECK: before=${before} created(201)=${created} expected=${expected} actual=${actual} -> ` +
      (created === 0 ? 'NOTHING CREATED' : actual === expected ? 'OK' : 'MISMATCH'),
  );
  const atEnd = value(m, 'count_at_end', 'value');
  lines.push(atEnd === null ? 'COUNT AT END: unavailable' : `COUNT AT END: {"count":${atEnd}} (expected ${expected})`);

  const out = { stdout: lines.join('\n') + '\n' };
  if (__ENV.SUMMARY_JSON) out[__ENV.SUMMARY_JSON] = JSON.stringify(data, null, 2);
  return out;
}
