#!/usr/bin/env node
// A SigV4-verifying reverse proxy with fault injection, for the S3 tests.
//
// s3rver 3.7.1 does not verify SigV4 signatures (any well-formed header with
// key S3RVER passes), so the tests put this proxy between ingot and s3rver.
// For every request it recomputes the AWS Signature Version 4 (header-based,
// AWS4-HMAC-SHA256, service s3) with the configured secret, checks that
// x-amz-content-sha256 is the SHA-256 of the body actually received (unless
// UNSIGNED-PAYLOAD), and only then forwards the request to the upstream.
// Nothing but Node's standard library is used.
//
// Usage: node sigv4-proxy.js --upstream http://127.0.0.1:PORT [options]
//   --upstream URL        the S3 server behind the proxy (required; http only)
//   --host ADDR           address to listen on (default 127.0.0.1)
//   --port N              port to listen on (default 0: a free one)
//   --access-key ID       access key id clients must use (default S3RVER)
//   --secret KEY          its secret access key (default S3RVER)
//   --region R            if given, the credential scope must name this region
//   --session-token T     if given, x-amz-security-token must be T and signed
//   --no-unsigned-payload refuse x-amz-content-sha256: UNSIGNED-PAYLOAD
//   --max-skew S          allowed clock skew in seconds (default 900)
//   --max-body BYTES      largest request body accepted (default 1 GiB)
//   --faults FILE         fault rules (JSON, format below) to start with
//   --faults-json JSON    the same, inline
//   --log FILE            append one JSON line per S3 request (see below)
//   --verbose             one stderr line per request
// Prints "listening PORT" on stdout once it accepts connections. SIGTERM or
// SIGINT exits at once (stalled requests included).
//
// Verification, as S3 does it:
//   * no Authorization header (and no presigned query)   -> 403 AccessDenied
//   * malformed Authorization, unknown key, wrong service/region/date scope,
//     x-amz-date missing or more than --max-skew off      -> 403 (AuthorizationHeaderMalformed,
//                                                             InvalidAccessKeyId, RequestTimeTooSkewed)
//   * an x-amz-* header present but not signed            -> 403 AccessDenied
//   * a signed header absent from the request (libcurl 7.88 signs "Expect:"
//     removal entries)                                    -> 403 SignatureDoesNotMatch
//   * x-amz-content-sha256 missing                        -> 400 InvalidRequest
//   * PUT without Content-Length (chunked)                -> 411 MissingContentLength
//   * STREAMING-* (aws-chunked) payloads                  -> 501 NotImplemented
//   * signature differs                                   -> 403 SignatureDoesNotMatch
//     (checked from the headers alone, before "100 Continue" is sent)
//   * body's SHA-256 differs from x-amz-content-sha256    -> 403 XAmzContentSHA256Mismatch
//     (real S3 answers 400 here; 403 keeps "refused" uniform for the tests)
//   Canonical request: method; the path exactly as sent (S3 does not
//   re-encode it); the query canonicalised from the raw query string (each
//   name/value percent-decoded, then RFC 3986-encoded with uppercase hex, "+"
//   taken literally, sorted by name then value, every name followed by "=");
//   the signed headers (lower-case, values trimmed, inner whitespace runs
//   collapsed, repeated headers joined by ","); the payload hash as given in
//   x-amz-content-sha256. Every refusal prints one line on stderr with the
//   canonical request and string-to-sign it expected (JSON-quoted), counts in
//   signature_failures (all of the refusals above, by code in
//   failures_by_code), and the XML error carries them too, like S3's.
//   A signed request's body is held in memory (one body per request, hashed
//   as it arrives) and forwarded only once it verified, so a tampered body
//   never reaches the store. Responses are streamed.
//
// Conditional writes, as S3 has them since 2024 (s3rver 3.7.1 ignores
// them): a PUT with "If-None-Match: *" is refused with 412
// PreconditionFailed when the key exists; a PUT or DELETE with "If-Match:
// ETAG" when the key is absent or its ETag differs. The proxy checks with a
// HEAD to the upstream and then forwards (without the condition headers),
// and it runs every PUT and DELETE of one key one after another, so the
// check and the write are one step for every other writer of that key.
// Refusals count in conditional_failures.
//
// Control endpoints (no authentication):
//   GET  /__proxy/stats   {"requests", "forwarded", "signature_failures",
//                          "faults_injected", "bytes_in", "bytes_out",
//                          "unsigned_payload", "by_method": {...},
//                          "by_status": {...}, "failures_by_code": {...},
//                          "faults_by_kind": {...}}
//                          requests: S3 requests received (control ones excluded)
//                          forwarded: requests sent on to the upstream
//                          bytes_in: request body bytes received from clients
//                                    (what ingot uploaded, refused ones included)
//                          bytes_out: response body bytes sent to clients
//                                    (what ingot downloaded)
//   POST /__proxy/reset   zeroes the stats (and the fault rules' counters)
//   GET  /__proxy/faults  the rules with their "matched"/"fired" counters
//   POST /__proxy/faults  replaces the rules (body: the JSON below; [] clears)
//
// Fault rules: a JSON array, or {"faults": [...]}. Each rule:
//   {"kind": K, "method": RE, "key": RE, "path": RE,
//    "every": N, "after": A, "times": T, "probability": P, "seed": S,
//    "seconds": S, "delay_ms": D, "forward": BOOL, "reset": BOOL}
//   kind: "503"      503 ServiceUnavailable (S3 XML)
//         "slowdown" 503 SlowDown
//         "500"      500 InternalError ({"kind": "500"} alone: always 500)
//         "drop"     destroy the connection without answering (curl: 52;
//                    with "reset": true an RST is sent instead, curl: 56)
//         "stall"    send nothing for "seconds" s, then go on normally;
//                    no "seconds" (or 0): never answer
//         "slow"     delay the response by "delay_ms" ms (combines with others)
//   method: regex on the HTTP method, anchored, case-insensitive (default any)
//   key:    regex (unanchored) on the object key, i.e. the decoded path after
//           "/BUCKET/" ("" for bucket-level requests) (default any)
//   path:   regex (unanchored) on the raw request target, path and query
//   A request "matches" a rule when method, key and path all match; each
//   rule counts its own matches (m = 1, 2, ...). Schedule: the first "after"
//   matches (default 0) never fire; then with "every": N it fires when
//   (m - after) % N == 0; with "probability": P it fires with probability P
//   from a PRNG seeded with "seed" (default 1) — deterministic for a given
//   order of requests; with neither it fires on every match. "times" caps
//   the number of firings. Of the rules that fire for a request, every
//   "slow" one adds its delay and the first other one (in list order) is
//   applied. Faults are applied after the signature checks (a refused
//   request is never faulted) and after the body was received; with
//   "forward": true the request is first forwarded to the upstream (so a PUT
//   is stored) and the fault replaces the upstream's response.
//
// Request log (--log FILE): one JSON object per S3 request, written before
// its response is sent: {"method", "path" (raw target), "key", "status",
// "bytes_in", "fault" (kind or null), "code" (error code or null)}.
'use strict';

const http = require('http');
const crypto = require('crypto');
const fs = require('fs');

// ---------------------------------------------------------------- options

function usage(msg) {
  process.stderr.write(`sigv4-proxy: ${msg}\n`);
  process.exit(2);
}

const opts = {
  host: '127.0.0.1',
  port: 0,
  upstream: null,
  accessKey: 'S3RVER',
  secret: 'S3RVER',
  region: null,
  sessionToken: null,
  allowUnsigned: true,
  maxSkew: 900,
  maxBody: 1024 * 1024 * 1024,
  faults: null, // {text, where}
  log: null,
  verbose: false,
};

{
  const argv = process.argv.slice(2);
  const val = (i) => {
    if (i + 1 >= argv.length) usage(`${argv[i]} needs a value`);
    return argv[i + 1];
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    switch (a) {
      case '--upstream': opts.upstream = val(i++); break;
      case '--host': opts.host = val(i++); break;
      case '--port': opts.port = Number(val(i++)); break;
      case '--access-key': opts.accessKey = val(i++); break;
      case '--secret': opts.secret = val(i++); break;
      case '--region': opts.region = val(i++); break;
      case '--session-token': opts.sessionToken = val(i++); break;
      case '--no-unsigned-payload': opts.allowUnsigned = false; break;
      case '--max-skew': opts.maxSkew = Number(val(i++)); break;
      case '--max-body': opts.maxBody = Number(val(i++)); break;
      case '--faults': {
        const f = val(i++);
        let text;
        try { text = fs.readFileSync(f, 'utf8'); } catch (e) { usage(`--faults ${f}: ${e.message}`); }
        opts.faults = { text, where: `--faults ${f}` };
        break;
      }
      case '--faults-json':
        opts.faults = { text: val(i++), where: '--faults-json' };
        break;
      case '--log': opts.log = val(i++); break;
      case '--verbose': opts.verbose = true; break;
      case '-h': case '--help':
        process.stdout.write(fs.readFileSync(__filename, 'utf8').split("'use strict'")[0].split('\n')
          .filter((l) => l.startsWith('//')).map((l) => l.slice(3)).join('\n') + '\n');
        process.exit(0);
        break;
      default: usage(`unknown argument '${a}' (see --help)`);
    }
  }
  if (!opts.upstream) usage('--upstream URL is required');
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) usage('bad --port');
}

const upstream = new URL(opts.upstream);
if (upstream.protocol !== 'http:') usage('--upstream must be an http:// URL');
const upstreamAgent = new http.Agent({ keepAlive: true, maxSockets: 64 });
const logFd = opts.log ? fs.openSync(opts.log, 'a') : null;

// ---------------------------------------------------------------- faults

const KINDS = new Set(['503', 'slowdown', '500', 'drop', 'stall', 'slow']);
const RULE_FIELDS = new Set(['kind', 'method', 'key', 'path', 'every', 'after', 'times',
  'probability', 'seed', 'seconds', 'delay_ms', 'forward', 'reset', 'comment']);

function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function parseFaults(text) {
  let j = JSON.parse(text);
  if (j && !Array.isArray(j) && typeof j === 'object') j = j.faults;
  if (!Array.isArray(j)) throw new Error('expected an array of rules or {"faults": [...]}');
  return j.map((r, i) => {
    const where = `rule ${i + 1}`;
    if (!r || typeof r !== 'object' || Array.isArray(r)) throw new Error(`${where}: not an object`);
    for (const k of Object.keys(r)) if (!RULE_FIELDS.has(k)) throw new Error(`${where}: unknown field '${k}'`);
    const kind = String(r.kind);
    if (!KINDS.has(kind)) throw new Error(`${where}: unknown kind '${r.kind}' (one of ${[...KINDS].join(', ')})`);
    const num = (name, min, dflt) => {
      if (r[name] === undefined) return dflt;
      const v = Number(r[name]);
      if (!Number.isFinite(v) || v < min) throw new Error(`${where}: bad ${name}`);
      return v;
    };
    const re = (name, flags) => {
      if (r[name] === undefined) return null;
      try { return new RegExp(String(r[name]), flags); } catch (e) { throw new Error(`${where}: ${name}: ${e.message}`); }
    };
    const rule = {
      spec: r,
      kind,
      method: r.method === undefined ? null : (() => {
        try { return new RegExp(`^(?:${r.method})$`, 'i'); } catch (e) { throw new Error(`${where}: method: ${e.message}`); }
      })(),
      key: re('key', ''),
      path: re('path', ''),
      every: num('every', 1, null),
      after: num('after', 0, 0),
      times: num('times', 0, null),
      probability: num('probability', 0, null),
      seconds: num('seconds', 0, 0),
      delayMs: num('delay_ms', 0, kind === 'slow' ? null : 0),
      forward: Boolean(r.forward),
      reset: Boolean(r.reset),
      matched: 0,
      fired: 0,
      rng: mulberry32(num('seed', 0, 1)),
    };
    if (rule.probability !== null && rule.probability > 1) throw new Error(`${where}: probability > 1`);
    if (rule.every !== null && rule.probability !== null) throw new Error(`${where}: both every and probability`);
    if (kind === 'slow' && rule.delayMs === null) throw new Error(`${where}: slow needs delay_ms`);
    return rule;
  });
}

let faultRules = [];
if (opts.faults) {
  try { faultRules = parseFaults(opts.faults.text); } catch (e) { usage(`${opts.faults.where}: ${e.message}`); }
}

// Returns {fault: rule|null, delay: ms} for a verified request.
function pickFaults(method, key, target) {
  let fault = null;
  let delay = 0;
  for (const r of faultRules) {
    if (r.method && !r.method.test(method)) continue;
    if (r.key && !r.key.test(key)) continue;
    if (r.path && !r.path.test(target)) continue;
    r.matched++;
    const m = r.matched - r.after;
    if (m <= 0) continue;
    if (r.times !== null && r.fired >= r.times) continue;
    let fires;
    if (r.every !== null) fires = m % r.every === 0;
    else if (r.probability !== null) fires = r.rng() < r.probability;
    else fires = true;
    if (!fires) continue;
    if (r.kind === 'slow') {
      r.fired++;
      delay += r.delayMs;
      countFault('slow');
    } else if (!fault) {
      r.fired++;
      fault = r;
      countFault(r.kind);
    }
  }
  return { fault, delay };
}

// ---------------------------------------------------------------- stats

function newStats() {
  return {
    requests: 0, forwarded: 0, signature_failures: 0, faults_injected: 0, conditional_failures: 0,
    bytes_in: 0, bytes_out: 0, unsigned_payload: 0,
    by_method: {}, by_status: {}, failures_by_code: {}, faults_by_kind: {},
  };
}
let stats = newStats();
const bump = (obj, k) => { obj[k] = (obj[k] || 0) + 1; };
function countFault(kind) { stats.faults_injected++; bump(stats.faults_by_kind, kind); }

// ---------------------------------------------------------------- SigV4

const EMPTY_SHA256 = crypto.createHash('sha256').update('').digest('hex');
const sha256hex = (s) => crypto.createHash('sha256').update(s).digest('hex');
const hmac = (k, s) => crypto.createHmac('sha256', k).update(s).digest();

function rfc3986(s) {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());
}
function pctDecode(s) {
  try { return decodeURIComponent(s); } catch (e) { return s; }
}

function canonicalQuery(raw) {
  if (!raw) return '';
  const pairs = raw.split('&').filter((p) => p !== '').map((p) => {
    const eq = p.indexOf('=');
    const name = eq < 0 ? p : p.slice(0, eq);
    const value = eq < 0 ? '' : p.slice(eq + 1);
    return [rfc3986(pctDecode(name)), rfc3986(pctDecode(value))];
  });
  pairs.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  return pairs.map(([n, v]) => `${n}=${v}`).join('&');
}

// header name (lower-case) -> list of values, in the order received
function headerValues(req) {
  const m = new Map();
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const n = raw[i].toLowerCase();
    if (!m.has(n)) m.set(n, []);
    m.get(n).push(raw[i + 1]);
  }
  return m;
}

class AuthError extends Error {
  constructor(status, code, message, extra) {
    super(message);
    this.status = status;
    this.code = code;
    this.extra = extra || {};
  }
}

function parseAmzDate(s) {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(s || '');
  if (!m) return null;
  return Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]);
}

// Verifies everything that can be verified from the request head. Returns
// {payloadHash} (the x-amz-content-sha256 value) or throws AuthError.
function verifyHead(req, target) {
  const hv = headerValues(req);
  const auth = req.headers.authorization;
  if (auth === undefined) {
    if (/(^|&)X-Amz-(Signature|Credential)=/i.test(target.split('?')[1] || '')) {
      throw new AuthError(403, 'AccessDenied', 'presigned (query-string) requests are not supported by the test proxy');
    }
    throw new AuthError(403, 'AccessDenied', 'Access Denied (the request is not signed)');
  }
  const am = /^AWS4-HMAC-SHA256\s+(.*)$/s.exec(auth);
  if (!am) throw new AuthError(403, 'AuthorizationHeaderMalformed', `unsupported authorization scheme: ${auth.split(' ')[0]}`);
  const parts = {};
  for (const p of am[1].split(',')) {
    const t = p.trim();
    const eq = t.indexOf('=');
    if (eq > 0) parts[t.slice(0, eq)] = t.slice(eq + 1);
  }
  if (!parts.Credential || !parts.SignedHeaders || !parts.Signature) {
    throw new AuthError(403, 'AuthorizationHeaderMalformed', 'Authorization needs Credential, SignedHeaders and Signature');
  }
  const cred = parts.Credential.split('/');
  if (cred.length !== 5 || cred[4] !== 'aws4_request') {
    throw new AuthError(403, 'AuthorizationHeaderMalformed', `malformed Credential '${parts.Credential}'`);
  }
  const [akid, scopeDate, region, service] = cred;
  if (akid !== opts.accessKey) {
    throw new AuthError(403, 'InvalidAccessKeyId', 'The AWS Access Key Id you provided does not exist in our records.');
  }
  if (service !== 's3') throw new AuthError(403, 'AuthorizationHeaderMalformed', `credential scope names service '${service}', expected 's3'`);
  if (opts.region && region !== opts.region) {
    throw new AuthError(403, 'AuthorizationHeaderMalformed', `credential scope names region '${region}', expected '${opts.region}'`);
  }
  const amzDate = req.headers['x-amz-date'];
  if (amzDate === undefined) throw new AuthError(403, 'AccessDenied', 'x-amz-date is missing (the Date header is not accepted by the test proxy)');
  const t = parseAmzDate(amzDate);
  if (t === null) throw new AuthError(403, 'AccessDenied', `malformed x-amz-date '${amzDate}'`);
  if (amzDate.slice(0, 8) !== scopeDate) {
    throw new AuthError(403, 'AuthorizationHeaderMalformed', `credential scope date ${scopeDate} is not the date of x-amz-date ${amzDate}`);
  }
  if (Math.abs(Date.now() - t) > opts.maxSkew * 1000) {
    throw new AuthError(403, 'RequestTimeTooSkewed', 'The difference between the request time and the current time is too large.');
  }
  const signed = parts.SignedHeaders.split(';');
  if (signed.some((h) => h !== h.toLowerCase() || h === '')) {
    throw new AuthError(403, 'AuthorizationHeaderMalformed', `SignedHeaders '${parts.SignedHeaders}' are not lower-case names`);
  }
  if (signed.join(';') !== [...signed].sort().join(';')) {
    throw new AuthError(403, 'SignatureDoesNotMatch', `SignedHeaders '${parts.SignedHeaders}' are not sorted`);
  }
  if (!signed.includes('host')) throw new AuthError(403, 'AccessDenied', 'the host header is not signed');
  for (const h of signed) {
    if (!hv.has(h)) throw new AuthError(403, 'SignatureDoesNotMatch', `signed header '${h}' is not in the request`);
  }
  for (const h of hv.keys()) {
    if (h.startsWith('x-amz-') && !signed.includes(h)) {
      throw new AuthError(403, 'AccessDenied', `There were headers present in the request which were not signed: ${h}`);
    }
  }
  if (opts.sessionToken !== null && req.headers['x-amz-security-token'] !== opts.sessionToken) {
    throw new AuthError(403, 'InvalidToken', 'The provided token is malformed or otherwise invalid.');
  }
  if (req.method === 'PUT' && req.headers['content-length'] === undefined) {
    throw new AuthError(411, 'MissingContentLength', 'You must provide the Content-Length HTTP header (S3 refuses chunked PUTs).');
  }
  const payloadHash = req.headers['x-amz-content-sha256'];
  if (payloadHash === undefined) {
    throw new AuthError(400, 'InvalidRequest', 'Missing required header for this request: x-amz-content-sha256');
  }
  if (/^STREAMING-/.test(payloadHash)) {
    throw new AuthError(501, 'NotImplemented', `x-amz-content-sha256: ${payloadHash} (aws-chunked uploads) is not supported by the test proxy`);
  }
  if (payloadHash === 'UNSIGNED-PAYLOAD') {
    if (!opts.allowUnsigned) throw new AuthError(403, 'AccessDenied', 'UNSIGNED-PAYLOAD refused (--no-unsigned-payload)');
  } else if (!/^[0-9a-f]{64}$/.test(payloadHash)) {
    throw new AuthError(400, 'InvalidArgument', `x-amz-content-sha256 must be UNSIGNED-PAYLOAD or 64 lower-case hex digits, got '${payloadHash}'`);
  }

  const q = target.indexOf('?');
  const path = q < 0 ? target : target.slice(0, q);
  const query = q < 0 ? '' : target.slice(q + 1);
  const canonHeaders = signed.map((h) => `${h}:${hv.get(h).map((v) => v.trim().replace(/\s+/g, ' ')).join(',')}\n`).join('');
  const canonicalRequest = [req.method, path || '/', canonicalQuery(query), canonHeaders,
    parts.SignedHeaders, payloadHash].join('\n');
  const scope = `${scopeDate}/${region}/${service}/aws4_request`;
  const stringToSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256hex(canonicalRequest)].join('\n');
  let key = hmac('AWS4' + opts.secret, scopeDate);
  key = hmac(key, region);
  key = hmac(key, service);
  key = hmac(key, 'aws4_request');
  const expected = crypto.createHmac('sha256', key).update(stringToSign).digest('hex');
  const got = String(parts.Signature);
  if (got.length !== expected.length || !crypto.timingSafeEqual(Buffer.from(got), Buffer.from(expected))) {
    throw new AuthError(403, 'SignatureDoesNotMatch',
      'The request signature we calculated does not match the signature you provided. Check your key and signing method.',
      { CanonicalRequest: canonicalRequest, StringToSign: stringToSign, SignatureProvided: got });
  }
  return { payloadHash };
}

// ---------------------------------------------------------------- responses

function xmlEscape(s) {
  return String(s).replace(/[<>&'"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', "'": '&apos;', '"': '&quot;' }[c]));
}

function errorXml(code, message, resource, extra) {
  let x = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${xmlEscape(code)}</Code><Message>${xmlEscape(message)}</Message>`;
  for (const [k, v] of Object.entries(extra || {})) x += `<${k}>${xmlEscape(v)}</${k}>`;
  x += `<Resource>${xmlEscape(resource)}</Resource><RequestId>sigv4-proxy</RequestId></Error>\n`;
  return x;
}

function logRequest(ctx, status, code) {
  bump(stats.by_status, String(status));
  if (opts.verbose) {
    process.stderr.write(`sigv4-proxy: ${ctx.method} ${ctx.target} -> ${status}${code ? ' ' + code : ''}` +
      `${ctx.fault ? ' [fault ' + ctx.fault + ']' : ''}\n`);
  }
  if (logFd !== null) {
    fs.writeSync(logFd, JSON.stringify({
      method: ctx.method, path: ctx.target, key: ctx.key, status,
      bytes_in: ctx.bytesIn, fault: ctx.fault || null, code: code || null,
    }) + '\n');
  }
}

function sendError(ctx, res, status, code, message, extra, close) {
  const body = errorXml(code, message, ctx.target, extra);
  logRequest(ctx, status, code);
  if (res.headersSent || res.destroyed) return;
  const headers = { 'Content-Type': 'application/xml', 'Content-Length': Buffer.byteLength(body), 'x-amz-request-id': 'sigv4-proxy' };
  if (close) headers.Connection = 'close';
  res.writeHead(status, headers);
  stats.bytes_out += Buffer.byteLength(body);
  res.end(body);
}

function sendJson(res, status, obj) {
  const body = JSON.stringify(obj) + '\n';
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

// ---------------------------------------------------------------- control

function readAll(req, cb) {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => cb(Buffer.concat(chunks).toString('utf8')));
}

function control(req, res, expectContinue) {
  if (expectContinue) res.writeContinue();
  const path = req.url.split('?')[0];
  const describe = () => faultRules.map((r) => ({ ...r.spec, matched: r.matched, fired: r.fired }));
  if (req.method === 'GET' && path === '/__proxy/stats') return sendJson(res, 200, stats);
  if (req.method === 'POST' && path === '/__proxy/reset') {
    return readAll(req, () => {
      stats = newStats();
      for (const r of faultRules) {
        r.matched = 0;
        r.fired = 0;
        r.rng = mulberry32(r.spec.seed === undefined ? 1 : Number(r.spec.seed));
      }
      sendJson(res, 200, stats);
    });
  }
  if (req.method === 'GET' && path === '/__proxy/faults') return sendJson(res, 200, describe());
  if (req.method === 'POST' && path === '/__proxy/faults') {
    return readAll(req, (text) => {
      try {
        faultRules = parseFaults(text);
      } catch (e) {
        return sendJson(res, 400, { error: e.message });
      }
      process.stderr.write(`sigv4-proxy: ${faultRules.length} fault rule(s) set\n`);
      sendJson(res, 200, describe());
    });
  }
  req.resume();
  return sendJson(res, 404, { error: `no control endpoint ${req.method} ${path}` });
}

// ---------------------------------------------------------------- proxying

const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade',
  'expect', 'te', 'trailer', 'content-length']);

const CONDITIONS = new Set(['if-match', 'if-none-match']);

function forward(ctx, req, body, onResponse, onError) {
  const headers = {};
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const n = raw[i].toLowerCase();
    if (HOP.has(n) || CONDITIONS.has(n)) continue;
    headers[n] = headers[n] === undefined ? raw[i + 1] : `${headers[n]}, ${raw[i + 1]}`;
  }
  const len = body.reduce((a, c) => a + c.length, 0);
  if (len > 0 || req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined) {
    headers['content-length'] = String(len);
  }
  stats.forwarded++;
  const up = http.request({
    host: upstream.hostname, port: upstream.port || 80, method: req.method, path: ctx.target,
    headers, agent: upstreamAgent,
  });
  up.on('response', onResponse);
  up.on('error', onError);
  for (const c of body) up.write(c);
  up.end();
  return up;
}

function relay(ctx, res, upres, delay) {
  const go = () => {
    if (res.destroyed) { upres.destroy(); return; }
    const headers = [];
    const raw = upres.rawHeaders;
    for (let i = 0; i < raw.length; i += 2) {
      const n = raw[i].toLowerCase();
      if (n === 'connection' || n === 'keep-alive' || n === 'transfer-encoding') continue;
      headers.push([raw[i], raw[i + 1]]);
    }
    const code = upres.statusCode >= 400 ? 'upstream' : null;
    logRequest(ctx, upres.statusCode, code);
    res.writeHead(upres.statusCode, upres.statusMessage, headers.flat());
    upres.on('data', (c) => {
      stats.bytes_out += c.length;
      if (!res.write(c)) {
        upres.pause();
        res.once('drain', () => upres.resume());
      }
    });
    upres.on('end', () => res.end());
    upres.on('error', () => res.destroy());
    res.on('close', () => { if (!upres.complete) upres.destroy(); });
    upres.resume(); // paused while delayed
  };
  if (delay > 0) {
    upres.pause();
    setTimeout(go, delay);
  } else {
    go();
  }
}

// ---------------------------------------------------------------- conditional writes

// One PUT or DELETE of a key at a time: fn(done) runs once the previous
// write of that key called its done.
const keyChains = new Map();
function withKeyLock(key, fn) {
  const prev = keyChains.get(key) || Promise.resolve();
  const next = prev.then(() => new Promise((resolve) => {
    try { fn(resolve); } catch (e) { resolve(); throw e; }
  }));
  keyChains.set(key, next);
  next.then(() => { if (keyChains.get(key) === next) keyChains.delete(key); });
}

function bareEtag(e) {
  return String(e || '').trim().replace(/^W\//, '').replace(/^"|"$/g, '');
}

// HEAD of the key upstream: cb(status, etag), status 0 when it failed.
function headUpstream(req, ctx, cb) {
  const headers = {};
  for (const n of ['authorization', 'x-amz-date', 'x-amz-content-sha256', 'host', 'x-amz-security-token']) {
    if (req.headers[n] !== undefined) headers[n] = req.headers[n];
  }
  const up = http.request({
    host: upstream.hostname, port: upstream.port || 80, method: 'HEAD', path: ctx.target.split('?')[0],
    headers, agent: upstreamAgent,
  });
  up.on('response', (r) => { r.resume(); r.on('end', () => cb(r.statusCode, r.headers.etag)); });
  up.on('error', () => cb(0, null));
  up.end();
}

// Runs send(done) for a PUT or DELETE under the key's lock, after checking
// its If-None-Match / If-Match against the upstream.
function writeInOrder(ctx, req, res, send) {
  const inm = req.headers['if-none-match'];
  const im = req.headers['if-match'];
  withKeyLock(ctx.key, (done) => {
    if (inm === undefined && im === undefined) return send(done);
    headUpstream(req, ctx, (status, etag) => {
      if (status === 0 || status >= 500) {
        sendError(ctx, res, 503, 'ServiceUnavailable', 'cannot check the condition upstream');
        return done();
      }
      const exists = status === 200;
      let holds = true;
      if (inm !== undefined && (inm.trim() !== '*' || exists)) holds = false;
      if (im !== undefined && (!exists || bareEtag(im) !== bareEtag(etag))) holds = false;
      if (!holds) {
        stats.conditional_failures++;
        sendError(ctx, res, 412, 'PreconditionFailed', 'At least one of the pre-conditions you specified did not hold');
        return done();
      }
      return send(done);
    });
  });
}

function dropConnection(req, rule) {
  const s = req.socket;
  if (rule.reset && typeof s.resetAndDestroy === 'function') s.resetAndDestroy();
  else s.destroy();
}

function applyFault(ctx, req, res, rule, delay, proceed) {
  const later = (fn) => (delay > 0 ? setTimeout(fn, delay) : fn());
  switch (rule.kind) {
    case '503':
      return later(() => sendError(ctx, res, 503, 'ServiceUnavailable', 'Please reduce your request rate. (injected)'));
    case 'slowdown':
      return later(() => sendError(ctx, res, 503, 'SlowDown', 'Please reduce your request rate. (injected)'));
    case '500':
      return later(() => sendError(ctx, res, 500, 'InternalError', 'We encountered an internal error. Please try again. (injected)'));
    case 'drop':
      logRequest(ctx, 0, 'dropped');
      return dropConnection(req, rule);
    case 'stall': {
      // Logged (status 0) when the client gives up first; otherwise the
      // request goes on after the stall and is logged then.
      let done = false;
      const t = rule.seconds > 0 ? setTimeout(() => {
        if (req.socket.destroyed) return;
        done = true;
        proceed();
      }, rule.seconds * 1000) : null;
      req.socket.once('close', () => {
        if (t) clearTimeout(t);
        if (!done) logRequest(ctx, 0, 'stalled');
      });
      return undefined;
    }
    default:
      throw new Error(`unhandled fault kind ${rule.kind}`);
  }
}

function handle(req, res, expectContinue) {
  const target = req.url;
  if (target.startsWith('/__proxy/')) return control(req, res, expectContinue);

  const pathPart = target.split('?')[0];
  const segs = pathPart.split('/');
  const ctx = {
    method: req.method, target, key: pctDecode(segs.slice(2).join('/')), bytesIn: 0, fault: null,
  };
  stats.requests++;
  bump(stats.by_method, req.method);
  res.on('error', () => {});
  req.on('error', () => {});

  const refuse = (e) => {
    stats.signature_failures++;
    bump(stats.failures_by_code, e.code);
    const extra = e.extra || {};
    process.stderr.write(`sigv4-proxy: ${e.status} ${e.code}: ${req.method} ${target}: ${e.message}` +
      (extra.CanonicalRequest !== undefined
        ? `; expected canonical request ${JSON.stringify(extra.CanonicalRequest)}, string to sign ${JSON.stringify(extra.StringToSign)}`
        : '') + '\n');
  };

  let verified;
  try {
    verified = verifyHead(req, target);
  } catch (e) {
    if (!(e instanceof AuthError)) throw e;
    refuse(e);
    if (expectContinue) {
      // No "100 Continue": the client must not send the body.
      return sendError(ctx, res, e.status, e.code, e.message, e.extra, true);
    }
    req.on('data', (c) => { ctx.bytesIn += c.length; stats.bytes_in += c.length; });
    req.on('end', () => sendError(ctx, res, e.status, e.code, e.message, e.extra, true));
    return undefined;
  }
  if (verified.payloadHash === 'UNSIGNED-PAYLOAD') stats.unsigned_payload++;

  const declared = Number(req.headers['content-length'] || 0);
  if (declared > opts.maxBody) {
    return sendError(ctx, res, 400, 'EntityTooLarge', `body larger than --max-body ${opts.maxBody}`, {}, true);
  }
  if (expectContinue) res.writeContinue();

  const hash = crypto.createHash('sha256');
  const body = [];
  let tooLarge = false;
  req.on('data', (c) => {
    ctx.bytesIn += c.length;
    stats.bytes_in += c.length;
    if (tooLarge) return;
    if (ctx.bytesIn > opts.maxBody) {
      tooLarge = true;
      body.length = 0;
      return;
    }
    hash.update(c);
    body.push(c);
  });
  req.on('end', () => {
    if (tooLarge) return sendError(ctx, res, 400, 'EntityTooLarge', `body larger than --max-body ${opts.maxBody}`, {}, true);
    const actual = hash.digest('hex');
    if (verified.payloadHash !== 'UNSIGNED-PAYLOAD' && actual !== verified.payloadHash) {
      const e = new AuthError(403, 'XAmzContentSHA256Mismatch',
        "The provided 'x-amz-content-sha256' header does not match what was computed.",
        { ClientComputedContentSHA256: verified.payloadHash, S3ComputedContentSHA256: actual });
      refuse(e);
      return sendError(ctx, res, e.status, e.code, e.message, e.extra);
    }

    const upstreamFailed = (err) => sendError(ctx, res, 502, 'BadGateway', `upstream ${opts.upstream}: ${err.message}`);
    const { fault, delay } = pickFaults(req.method, ctx.key, target);
    const isWrite = (req.method === 'PUT' || req.method === 'DELETE') && ctx.key !== '';
    const normal = () => {
      if (!isWrite) return forward(ctx, req, body, (upres) => relay(ctx, res, upres, delay), upstreamFailed);
      return writeInOrder(ctx, req, res, (done) => {
        res.on('close', done);
        forward(ctx, req, body, (upres) => relay(ctx, res, upres, delay), (err) => { upstreamFailed(err); done(); });
      });
    };
    if (!fault) {
      if (delay > 0) ctx.fault = 'slow';
      return normal();
    }
    ctx.fault = fault.kind;
    if (fault.forward) {
      // The upstream does the work; the client sees only the fault.
      return forward(ctx, req, body, (upres) => {
        upres.resume();
        upres.on('end', () => applyFault(ctx, req, res, fault, delay, () => relayStored(ctx, res, upres)));
      }, upstreamFailed);
    }
    return applyFault(ctx, req, res, fault, delay, normal);
  });
  return undefined;
}

// After a forwarded stall the upstream's response was already consumed:
// answer 200 with no body (the request took effect).
function relayStored(ctx, res, upres) {
  logRequest(ctx, upres.statusCode, null);
  if (res.destroyed) return;
  res.writeHead(upres.statusCode, { 'Content-Length': 0 });
  res.end();
}

const server = http.createServer({ keepAliveTimeout: 30000 });
server.requestTimeout = 0;
server.headersTimeout = 60000;
server.on('request', (req, res) => handle(req, res, false));
server.on('checkContinue', (req, res) => handle(req, res, true));
server.on('clientError', (err, socket) => { socket.destroy(); });
server.listen(opts.port, opts.host, () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});
server.on('error', (e) => {
  process.stderr.write(`sigv4-proxy: ${e.message}\n`);
  process.exit(1);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
