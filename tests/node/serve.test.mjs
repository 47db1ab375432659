// serve.test.mjs - `aigw serve` driven by the official Node SDKs: `openai`
// (chat completions) and `@anthropic-ai/sdk` (/v1/messages), as installed
// by run.sh from package.json and package-lock.json.
//
// The upstream is a fake provider written here with node:http on loopback:
// scripted per credential and model (status, headers, JSON body, or a
// Server-Sent Events stream that ends cleanly or is cut mid-body), counting
// what it receives.  Each test writes its gateway file and runs its own
// `aigw serve --listen 127.0.0.1:0`, stopped with SIGTERM at the test's end
// (exit 0 asserted).  The SDK clients get a recording fetch, so the test
// sees every HTTP call an SDK makes (its own retries included) and when.
//
// env: AIGW_BIN (the aigw binary), AIGW_NODE_DIR (the folder holding the
// installed package.json and node_modules).
import { after, before, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import readline from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';

const AIGW = process.env.AIGW_BIN;
const NODE_DIR = process.env.AIGW_NODE_DIR;
assert.ok(AIGW && fs.existsSync(AIGW), `AIGW_BIN is not a file: ${AIGW}`);
assert.ok(NODE_DIR && fs.existsSync(path.join(NODE_DIR, 'node_modules')),
  `AIGW_NODE_DIR has no node_modules: ${NODE_DIR}`);
const requireSdk = createRequire(path.join(NODE_DIR, 'package.json'));
const OpenAI = requireSdk('openai').OpenAI;
const Anthropic = requireSdk('@anthropic-ai/sdk').Anthropic;

// provider keys (what the fake upstream sees) and the gateway's access key
const KEY1 = 'sk-node-primary-1111';
const KEY2 = 'sk-node-backup-2222';
const ACCESS_KEY = 'ak-node-tests-0123456789';
const HI = [{ role: 'user', content: 'hi' }];

// ---------------------------------------------------------------------------
// the fake upstream
// ---------------------------------------------------------------------------

const sse = (obj, event) =>
  (event ? `event: ${event}\n` : '') + `data: ${JSON.stringify(obj)}\n\n`;

function completion(model, text) {
  return {
    id: 'chatcmpl-fake', object: 'chat.completion', created: 1, model,
    choices: [{ index: 0, message: { role: 'assistant', content: text }, finish_reason: 'stop' }],
    usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
  };
}

const chunk = (model, delta, finish = null) => sse({
  id: 'chatcmpl-fake', object: 'chat.completion.chunk', created: 1, model,
  choices: [{ index: 0, delta, finish_reason: finish }],
});
const roleChunk = (model) => chunk(model, { role: 'assistant', content: '' });
const tokenChunk = (model, text) => chunk(model, { content: text });

/** A whole streamed chat completion: role, tokens, finish, [DONE]. */
function chatStream(model, tokens) {
  return [roleChunk(model), ...tokens.map((t) => tokenChunk(model, t)),
    chunk(model, {}, 'stop'), 'data: [DONE]\n\n'];
}

function anthropicMessage(model, text) {
  return {
    id: 'msg_fake', type: 'message', role: 'assistant', model,
    content: [{ type: 'text', text }], stop_reason: 'end_turn', stop_sequence: null,
    usage: { input_tokens: 3, output_tokens: 2 },
  };
}

/** A whole streamed Anthropic message, event by event. */
function anthropicStream(model, tokens) {
  const start = { ...anthropicMessage(model, ''), content: [], stop_reason: null };
  return [
    sse({ type: 'message_start', message: start }, 'message_start'),
    sse({ type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } },
      'content_block_start'),
    sse({ type: 'ping' }, 'ping'),
    ...tokens.map((t) => sse({ type: 'content_block_delta', index: 0,
      delta: { type: 'text_delta', text: t } }, 'content_block_delta')),
    sse({ type: 'content_block_stop', index: 0 }, 'content_block_stop'),
    sse({ type: 'message_delta', delta: { stop_reason: 'end_turn', stop_sequence: null },
      usage: { output_tokens: tokens.length } }, 'message_delta'),
    sse({ type: 'message_stop' }, 'message_stop'),
  ];
}

const OPENAI_RATE_LIMITED = {
  error: { message: 'Rate limit reached', type: 'requests', param: null,
    code: 'rate_limit_exceeded' },
};
const ANTHROPIC_RATE_LIMITED = {
  type: 'error', error: { type: 'rate_limit_error', message: 'Rate limited' },
};
const SERVER_ERROR = {
  error: { message: 'The server had an error', type: 'server_error', param: null, code: null },
};

const rateLimited = (retryAfter, body = OPENAI_RATE_LIMITED) =>
  ({ status: 429, headers: retryAfter == null ? {} : { 'retry-after': String(retryAfter) },
    json: body });

class FakeUpstream {
  constructor() {
    this.scripts = new Map();
    this.requests = [];
  }

  async start() {
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((e) => { res.destroy(); console.error('fake upstream:', e); });
    });
    await new Promise((ok) => this.server.listen(0, '127.0.0.1', ok));
    this.url = `http://127.0.0.1:${this.server.address().port}`;
  }

  async stop() {
    this.server.closeAllConnections();
    await new Promise((ok) => this.server.close(ok));
  }

  reset() {
    this.scripts.clear();
    this.requests = [];
  }

  /** Actions for one credential with one upstream model; the last repeats. */
  script(key, model, ...actions) {
    this.scripts.set(`${key} ${model}`, actions);
  }

  /** Requests received, for a key and/or a model (null: any). */
  count(key = null, model = null) {
    return this.requests.filter((r) => (key === null || r.key === key) &&
      (model === null || r.model === model)).length;
  }

  /** [key, model] of each request received, in order. */
  calls() {
    return this.requests.map((r) => [r.key, r.model]);
  }

  async handle(req, res) {
    const parts = [];
    for await (const p of req) parts.push(p);
    const raw = Buffer.concat(parts).toString('utf8');
    let body = null;
    try { body = JSON.parse(raw); } catch { /* recorded as null */ }
    const auth = req.headers.authorization || '';
    const key = auth.startsWith('Bearer ') ? auth.slice(7) : (req.headers['x-api-key'] || '');
    const model = body && body.model;
    this.requests.push({ key, model, path: req.url, body, headers: req.headers });
    const acts = this.scripts.get(`${key} ${model}`);
    const act = !acts ? { status: 400, json: { error: {
      message: `fake upstream: no script for key ${key} and model ${model}`,
      type: 'invalid_request_error', code: 'unscripted' } } }
      : acts.length > 1 ? acts.shift() : acts[0];
    if (act.stream) {
      res.writeHead(act.status || 200, { 'content-type': 'text/event-stream',
        'cache-control': 'no-cache', ...(act.headers || {}) });
      for (const c of act.stream) {
        await new Promise((ok) => res.write(c, ok)); // flushed to the socket
        if (act.delay) await sleep(act.delay);
      }
      if (act.end === 'cut') { // a FIN mid-body: no last chunk
        await sleep(20);
        res.socket.destroy();
        return;
      }
      res.end();
      return;
    }
    const out = JSON.stringify(act.json ?? completion(model, 'Hello'));
    res.writeHead(act.status || 200, { 'content-type': 'application/json',
      ...(act.headers || {}) });
    res.end(out);
  }
}

const fake = new FakeUpstream();
before(() => fake.start());
after(() => fake.stop());
beforeEach(() => fake.reset());

// ---------------------------------------------------------------------------
// aigw serve
// ---------------------------------------------------------------------------

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'aigw-serve-node-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A gateway file: custom provider "fake" (chat completions and Anthropic's
 * messages), keys primary then backup, one access key. */
function gatewayFile(gw = {}) {
  return {
    providers: [{
      providerId: 'fake', name: 'Fake', baseUrl: `${fake.url}/v1`,
      supportedApiSurfaces: [{ format: 'openai', surface: 'chat-completions' },
        { format: 'anthropic', surface: 'messages' }],
      models: [{ modelId: 'm1' }, { modelId: 'm2' }],
    }],
    providerKeys: [
      { id: 'primary', providerId: 'fake', name: 'primary', value: KEY1 },
      { id: 'backup', providerId: 'fake', name: 'backup', value: KEY2 },
    ],
    accessKeyConfiguration: {
      name: 'node-tests',
      router: { rules: [{ provider: 'fake', steps: [{ type: 'user',
        keySelectionStrategy: 'ordered', keys: [{ id: 'primary' }, { id: 'backup' }] }] }] },
    },
    accessKeys: [{ id: 'node-tests', value: ACCESS_KEY }],
    gatewayConfig: { perRequestTimeout: '5s', totalTimeout: '15s', retryAfterMax: '200ms',
      sameBackendRetries: 0, ...gw },
  };
}

let gatewayCount = 0;

/** Starts `aigw serve` on the gateway file made of gw (gatewayConfig
 * members); stopped with SIGTERM after the test t, exit 0 asserted. */
async function startGateway(t, gw = {}) {
  const file = path.join(tmp, `gateway-${++gatewayCount}.json`);
  fs.writeFileSync(file, JSON.stringify(gatewayFile(gw), null, 2));
  const proc = spawn(AIGW, ['serve', '-c', file, '--listen', '127.0.0.1:0'],
    { stdio: ['ignore', 'ignore', 'pipe'] });
  const lines = [];
  const exited = new Promise((ok) => proc.on('exit', (code, signal) => ok({ code, signal })));
  const url = await new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`aigw serve did not start:\n${lines.join('\n')}`)),
      5000);
    readline.createInterface({ input: proc.stderr }).on('line', (line) => {
      lines.push(line);
      const m = lines.length === 1 && /^listening on (http:\/\/\S+)$/.exec(line);
      if (m) { clearTimeout(timer); ok(m[1]); }
    });
    proc.on('exit', () => { clearTimeout(timer); fail(new Error(`aigw serve exited:\n${lines.join('\n')}`)); });
  });
  const gateway = {
    url,
    stderr: () => lines.join('\n'),
    /** the access log so far: one JSON object per request */
    log: () => lines.slice(1).map((l) => JSON.parse(l)),
    /** the access log once it has n lines (a line follows its answer) */
    async waitLog(n) {
      for (let i = 0; i < 100 && lines.length - 1 < n; i++) await sleep(20);
      const log = this.log();
      assert.equal(log.length, n, `access log lines:\n${this.stderr()}`);
      return log;
    },
  };
  t.after(async () => {
    proc.kill('SIGTERM');
    const { code, signal } = await exited;
    assert.deepEqual({ code, signal }, { code: 0, signal: null },
      `aigw serve did not exit 0 on SIGTERM; stderr:\n${gateway.stderr()}`);
    assert.doesNotMatch(gateway.stderr(), /Sanitizer|runtime error:/);
  });
  return gateway;
}

/** A fetch that records each HTTP call an SDK makes: when, status,
 * headers, and (raw) a promise of the body's bytes as the SDK got them. */
function recordingFetch(raw = false) {
  const calls = [];
  const f = async (url, init) => {
    const t0 = performance.now();
    const res = await fetch(url, init);
    calls.push({ t0, url: String(url), status: res.status, headers: res.headers,
      text: raw ? res.clone().text() : null });
    return res;
  };
  f.calls = calls;
  return f;
}

function openai(gateway, opts = {}, raw = false) {
  const fetch = recordingFetch(raw);
  const client = new OpenAI({ apiKey: ACCESS_KEY, baseURL: `${gateway.url}/v1`, maxRetries: 0,
    fetch, ...opts });
  return { client, calls: fetch.calls };
}

function anthropic(gateway, opts = {}, raw = false) {
  const fetch = recordingFetch(raw);
  const client = new Anthropic({ apiKey: ACCESS_KEY, baseURL: gateway.url, maxRetries: 0,
    fetch, ...opts });
  return { client, calls: fetch.calls };
}

/** The restart marker in a raw stream: (what came before it, its reason,
 * what came after it).  An SSE comment, ": aigw.reset {reason}", which the
 * SDKs pass over (an event of any name reaches their callers). */
function splitAtRestart(raw) {
  const m = /^([^]*?\n\n): aigw\.reset (\{[^\n]*\})\n\n([^]*)$/.exec(raw);
  assert.ok(m, `no restart event in the stream:\n${raw}`);
  return [m[1], JSON.parse(m[2]), m[3]];
}

function assertAigwHeaders(response, attempts, model) {
  const h = response.headers;
  assert.match(h.get('x-aigw-request-id'), /^rq_[0-9A-Za-z]{26}$/);
  assert.equal(h.get('x-aigw-attempts'), String(attempts));
  assert.equal(h.get('x-aigw-provider'), 'fake');
  assert.equal(h.get('x-aigw-model'), model);
}

/** What an upstream request carried: the model rewritten, no `models`. */
function assertUpstreamBody(r, model, extra = {}) {
  assert.deepEqual(r.body, { model, messages: HI, ...extra });
}

// ---------------------------------------------------------------------------
// chat completions (openai)
// ---------------------------------------------------------------------------

test('chat: whole answer through a key failover (429 on primary, backup serves)', async (t) => {
  const gw = await startGateway(t);
  fake.script(KEY1, 'm1', rateLimited(30));
  fake.script(KEY2, 'm1', { json: completion('m1', 'Hello from backup') });
  const { client, calls } = openai(gw);
  const { data, response } = await client.chat.completions
    .create({ model: 'fake:m1', messages: HI }).withResponse();
  assert.equal(data.choices[0].message.content, 'Hello from backup');
  assert.equal(response.status, 200);
  assertAigwHeaders(response, 2, 'm1');
  assert.equal(calls.length, 1);
  assert.deepEqual(fake.calls(), [[KEY1, 'm1'], [KEY2, 'm1']]);
  for (const r of fake.requests) {
    assert.equal(r.path, '/v1/chat/completions');
    assertUpstreamBody(r, 'm1');
  }
  const [line] = await gw.waitLog(1);
  assert.equal(line.route, '/v1/chat/completions');
  assert.equal(line.status, 200);
  assert.equal(line.accessKey, 'node-tests');
  assert.equal(line.stream, false);
  assert.equal(line.outcome, 'served');
});

test('chat: streamed answer through a key failover', async (t) => {
  const gw = await startGateway(t);
  fake.script(KEY1, 'm1', rateLimited(30));
  fake.script(KEY2, 'm1', { stream: chatStream('m1', ['Hel', 'lo', ' world']), delay: 20 });
  const { client } = openai(gw);
  const { data: stream, response } = await client.chat.completions
    .create({ model: 'fake:m1', messages: HI, stream: true }).withResponse();
  assert.equal(response.status, 200);
  assert.match(response.headers.get('content-type'), /^text\/event-stream/);
  assertAigwHeaders(response, 2, 'm1');
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  assert.deepEqual(chunks.map((c) => c.object), Array(5).fill('chat.completion.chunk'));
  assert.equal(chunks.map((c) => c.choices[0].delta.content ?? '').join(''), 'Hello world');
  assert.equal(chunks.at(-1).choices[0].finish_reason, 'stop');
  assert.deepEqual(fake.calls(), [[KEY1, 'm1'], [KEY2, 'm1']]);
  assertUpstreamBody(fake.requests[1], 'm1', { stream: true });
  const [line] = await gw.waitLog(1);
  assert.equal(line.status, 200);
  assert.equal(line.stream, true);
  assert.equal(line.outcome, 'served');
});

test('chat: whole answer through a model fallback (m1 fails on both keys, m2 serves)',
  async (t) => {
    const gw = await startGateway(t);
    fake.script(KEY1, 'm1', { status: 500, json: SERVER_ERROR });
    fake.script(KEY2, 'm1', { status: 500, json: SERVER_ERROR });
    fake.script(KEY1, 'm2', { json: completion('m2', 'Hello from m2') });
    const { client } = openai(gw);
    const { data, response } = await client.chat.completions
      .create({ model: 'fake:m1', models: ['fake:m2'], messages: HI }).withResponse();
    assert.equal(data.choices[0].message.content, 'Hello from m2');
    assertAigwHeaders(response, 3, 'm2');
    assert.deepEqual(fake.calls(), [[KEY1, 'm1'], [KEY2, 'm1'], [KEY1, 'm2']]);
    assertUpstreamBody(fake.requests[2], 'm2');
  });

test('chat: streamed answer through a model fallback (m1 cut before its first token)',
  async (t) => {
    const gw = await startGateway(t);
    // a 200 whose stream breaks before any content: unseen by the caller; a
    // network failure, so the step's other key (same host) is passed over
    fake.script(KEY1, 'm1', { stream: [roleChunk('m1')], end: 'cut' });
    fake.script(KEY1, 'm2', { stream: chatStream('m2', ['Fall', 'back']) });
    const { client } = openai(gw);
    const { data: stream, response } = await client.chat.completions
      .create({ model: 'fake:m1', models: ['fake:m2'], messages: HI, stream: true })
      .withResponse();
    assertAigwHeaders(response, 2, 'm2');
    let text = '';
    for await (const c of stream) text += c.choices[0].delta.content ?? '';
    assert.equal(text, 'Fallback');
    assert.deepEqual(fake.calls(), [[KEY1, 'm1'], [KEY1, 'm2']]);
    assertUpstreamBody(fake.requests[1], 'm2', { stream: true });
  });

test('chat: Retry-After honoured by the SDK when every key is limited, then served',
  async (t) => {
    const gw = await startGateway(t);
    // primary ready again in 1 s, backup in 3 s; the gateway's own wait
    // (retryAfterMax 200ms) is shorter, so it answers 429 with the wait
    fake.script(KEY1, 'm1', rateLimited(1), { json: completion('m1', 'after the wait') });
    fake.script(KEY2, 'm1', rateLimited(3));
    const { client, calls } = openai(gw, { maxRetries: 2 });
    const t0 = performance.now();
    const data = await client.chat.completions.create({ model: 'fake:m1', messages: HI });
    const took = performance.now() - t0;
    assert.equal(data.choices[0].message.content, 'after the wait');
    assert.deepEqual(calls.map((c) => c.status), [429, 200]);
    assert.equal(calls[0].headers.get('retry-after'), '1');
    const waitMs = Number(calls[0].headers.get('retry-after-ms'));
    assert.ok(waitMs > 900 && waitMs <= 1000, `retry-after-ms ${waitMs}`);
    assert.deepEqual(calls.map((c) => c.headers.get('x-aigw-attempts')), ['2', '1']);
    assert.ok(calls[1].t0 - calls[0].t0 >= waitMs, `the SDK waited ${calls[1].t0 - calls[0].t0} ms`);
    assert.ok(took < 3000, `took ${took} ms`);
    // the SDK's retry cost one upstream call: the key that was ready
    assert.deepEqual(fake.calls(), [[KEY1, 'm1'], [KEY2, 'm1'], [KEY1, 'm1']]);
  });

test('chat: RateLimitError when every key stays limited; SDK retries do not multiply ' +
  'upstream calls', async (t) => {
  const gw = await startGateway(t);
  fake.script(KEY1, 'm1', rateLimited(1));
  fake.script(KEY2, 'm1', rateLimited(3));
  const { client, calls } = openai(gw, { maxRetries: 2 });
  const err = await client.chat.completions.create({ model: 'fake:m1', messages: HI })
    .then(() => null, (e) => e);
  assert.ok(err instanceof OpenAI.RateLimitError, `got ${err}`);
  assert.equal(err.status, 429);
  assert.equal(err.code, 'rate_limited');
  assert.equal(err.type, 'aigw_error');
  assert.equal(err.headers.get('retry-after'), '1');
  // three calls from the SDK (maxRetries 2), each after the wait named
  assert.deepEqual(calls.map((c) => c.status), [429, 429, 429]);
  for (let i = 1; i < calls.length; i++) {
    const named = Number(calls[i - 1].headers.get('retry-after-ms'));
    assert.ok(named > 700, `retry-after-ms ${named}`);
    assert.ok(calls[i].t0 - calls[i - 1].t0 >= named, `call ${i + 1} came too early`);
  }
  // the first tried both keys; each retry came when the primary was ready
  // again and tried it alone: the backup (cooling 3 s) was not called again
  assert.deepEqual(calls.map((c) => c.headers.get('x-aigw-attempts')), ['2', '1', '1']);
  assert.deepEqual(fake.calls(), [[KEY1, 'm1'], [KEY2, 'm1'], [KEY1, 'm1'], [KEY1, 'm1']]);
  // another caller while every key cools: answered from memory, no call
  const other = openai(gw);
  const err2 = await other.client.chat.completions.create({ model: 'fake:m1', messages: HI })
    .then(() => null, (e) => e);
  assert.ok(err2 instanceof OpenAI.RateLimitError, `got ${err2}`);
  assert.equal(err2.code, 'rate_limited');
  assert.equal(other.calls[0].headers.get('x-aigw-attempts'), '0');
  assert.ok(Number(other.calls[0].headers.get('retry-after-ms')) > 200);
  assert.equal(fake.count(), 4);
  const log = await gw.waitLog(4);
  assert.deepEqual(log.map((l) => l.status), [429, 429, 429, 429]);
  assert.deepEqual(log.map((l) => l.errorCode), Array(4).fill('rate_limited'));
});

test('chat: a stream restart (streamRestart) as the SDK sees it', async (t) => {
  const gw = await startGateway(t, { streamRestart: true });
  // m1 commits (two tokens reach the caller), then its connection is cut;
  // the request is sent again to m2, whose answer follows whole
  const partial = [roleChunk('m1'), tokenChunk('m1', 'one'), tokenChunk('m1', 'two')];
  const full = chatStream('m2', ['Fall', 'back']);
  fake.script(KEY1, 'm1', { stream: partial, end: 'cut' });
  fake.script(KEY1, 'm2', { stream: full });
  const { client, calls } = openai(gw, {}, true);
  const { data: stream, response } = await client.chat.completions
    .create({ model: 'fake:m1', models: ['fake:m2'], messages: HI, stream: true })
    .withResponse();
  // status and headers went out at the first commit (m1, attempt 1)
  assert.equal(response.status, 200);
  assertAigwHeaders(response, 1, 'm1');
  const items = [];
  for await (const c of stream) items.push(c);
  // on the wire: the partial answer, the restart event, m2's answer whole
  const [before, reason, rest] = splitAtRestart(await calls[0].text);
  assert.equal(before, partial.join(''));
  assert.deepEqual(reason, { reason: 'connection_cut', attempt: 1, provider: 'fake', model: 'm1' });
  assert.equal(rest, full.join(''));
  // what the SDK yields: chat.completion.chunk objects only (the restart
  // event passed over), the partial answer's then m2's, and no error
  assert.deepEqual(items.filter((c) => c.object !== 'chat.completion.chunk'), [],
    'the SDK yielded the restart event as a chunk: a loop reading chunk.choices[0] throws on it');
  assert.deepEqual(items.map((c) => [c.model, c.choices[0].delta.content ?? '']),
    [['m1', ''], ['m1', 'one'], ['m1', 'two'], ['m2', ''], ['m2', 'Fall'], ['m2', 'back'],
      ['m2', '']]);
  assert.deepEqual(fake.calls(), [[KEY1, 'm1'], [KEY1, 'm2']]);
  assertUpstreamBody(fake.requests[1], 'm2', { stream: true });
  const [line] = await gw.waitLog(1);
  assert.equal(line.status, 200);
  assert.equal(line.outcome, 'served');
  assert.equal(line.model, 'm2');
});

// ---------------------------------------------------------------------------
// /v1/messages (@anthropic-ai/sdk)
// ---------------------------------------------------------------------------

test('messages: whole answer through a key failover', async (t) => {
  const gw = await startGateway(t);
  fake.script(KEY1, 'm1', rateLimited(30, ANTHROPIC_RATE_LIMITED));
  fake.script(KEY2, 'm1', { json: anthropicMessage('m1', 'Hello from backup') });
  const { client, calls } = anthropic(gw);
  const { data, response } = await client.messages
    .create({ model: 'fake:m1', max_tokens: 16, messages: HI }).withResponse();
  assert.equal(data.type, 'message');
  assert.deepEqual(data.content, [{ type: 'text', text: 'Hello from backup' }]);
  assertAigwHeaders(response, 2, 'm1');
  assert.equal(calls.length, 1);
  assert.equal(calls[0].url, `${gw.url}/v1/messages`);
  assert.deepEqual(fake.calls(), [[KEY1, 'm1'], [KEY2, 'm1']]);
  for (const r of fake.requests) {
    assert.equal(r.path, '/v1/messages');
    assertUpstreamBody(r, 'm1', { max_tokens: 16 });
  }
  const [line] = await gw.waitLog(1);
  assert.equal(line.route, '/v1/messages');
  assert.equal(line.status, 200);
});

test('messages: streamed answer through a key failover', async (t) => {
  const gw = await startGateway(t);
  fake.script(KEY1, 'm1', rateLimited(30, ANTHROPIC_RATE_LIMITED));
  fake.script(KEY2, 'm1', { stream: anthropicStream('m1', ['Hel', 'lo']), delay: 20 });
  const { client } = anthropic(gw);
  const { data: stream, response } = await client.messages
    .create({ model: 'fake:m1', max_tokens: 16, messages: HI, stream: true }).withResponse();
  assertAigwHeaders(response, 2, 'm1');
  const events = [];
  for await (const ev of stream) events.push(ev);
  assert.deepEqual(events.map((e) => e.type), ['message_start', 'content_block_start',
    'content_block_delta', 'content_block_delta', 'content_block_stop', 'message_delta',
    'message_stop']);
  assert.equal(events.filter((e) => e.type === 'content_block_delta')
    .map((e) => e.delta.text).join(''), 'Hello');
  assert.deepEqual(fake.calls(), [[KEY1, 'm1'], [KEY2, 'm1']]);
  assertUpstreamBody(fake.requests[1], 'm1', { max_tokens: 16, stream: true });
  // the SDK's stream helper on the same route
  fake.reset();
  fake.script(KEY1, 'm1', rateLimited(30, ANTHROPIC_RATE_LIMITED)); // cooling: not called
  fake.script(KEY2, 'm1', { stream: anthropicStream('m1', ['Hi ', 'again']) });
  const msg = await client.messages.stream({ model: 'fake:m1', max_tokens: 16, messages: HI })
    .finalMessage();
  assert.deepEqual(msg.content, [{ type: 'text', text: 'Hi again' }]);
  assert.deepEqual(fake.calls(), [[KEY2, 'm1']]);
});

test('messages: a stream restart (streamRestart) as the SDK sees it', async (t) => {
  const gw = await startGateway(t, { streamRestart: true });
  const partial = anthropicStream('m1', ['one', 'two']).slice(0, 4); // start, block, ping, 'one'
  const full = anthropicStream('m2', ['Fall', 'back']);
  fake.script(KEY1, 'm1', { stream: partial, end: 'cut' });
  fake.script(KEY1, 'm2', { stream: full });
  const { client, calls } = anthropic(gw, {}, true);
  const { data: stream, response } = await client.messages
    .create({ model: 'fake:m1', models: ['fake:m2'], max_tokens: 16, messages: HI, stream: true })
    .withResponse();
  assertAigwHeaders(response, 1, 'm1');
  const events = [];
  for await (const ev of stream) events.push(ev);
  const [before, reason, rest] = splitAtRestart(await calls[0].text);
  assert.equal(before, partial.join(''));
  assert.deepEqual(reason, { reason: 'connection_cut', attempt: 1, provider: 'fake', model: 'm1' });
  assert.equal(rest, full.join(''));
  // what the SDK yields: Anthropic's events only (the restart passed over):
  // the partial message's, then m2's whole
  assert.deepEqual(events.filter((e) => typeof e.type !== 'string'), [],
    'the SDK yielded the restart event as a stream event (it has no "type")');
  assert.deepEqual(events.map((e) => e.type === 'message_start' ? `start ${e.message.model}`
    : e.type === 'content_block_delta' ? e.delta.text : e.type), ['start m1',
    'content_block_start', 'one', 'start m2', 'content_block_start', 'Fall', 'back',
    'content_block_stop', 'message_delta', 'message_stop']);
  assert.deepEqual(fake.calls(), [[KEY1, 'm1'], [KEY1, 'm2']]);
  assertUpstreamBody(fake.requests[1], 'm2', { max_tokens: 16, stream: true });
});

// ---------------------------------------------------------------------------
// access keys
// ---------------------------------------------------------------------------

test('a wrong access key: AuthenticationError from both SDKs, nothing sent upstream',
  async (t) => {
    const gw = await startGateway(t);
    const o = openai(gw, { apiKey: 'ak-wrong-0123456789', maxRetries: 2 });
    const err = await o.client.chat.completions.create({ model: 'fake:m1', messages: HI })
      .then(() => null, (e) => e);
    assert.ok(err instanceof OpenAI.AuthenticationError, `got ${err}`);
    assert.equal(err.status, 401);
    assert.equal(err.code, 'invalid_api_key');
    assert.equal(err.type, 'invalid_request_error');
    assert.equal(o.calls.length, 1); // not retried
    const a = anthropic(gw, { apiKey: 'ak-wrong-0123456789', maxRetries: 2 });
    const err2 = await a.client.messages.create({ model: 'fake:m1', max_tokens: 16, messages: HI })
      .then(() => null, (e) => e);
    assert.ok(err2 instanceof Anthropic.AuthenticationError, `got ${err2}`);
    assert.equal(err2.status, 401);
    assert.equal(err2.error.type, 'error');
    assert.equal(err2.error.error.type, 'authentication_error');
    assert.equal(a.calls.length, 1);
    assert.equal(fake.count(), 0);
    const log = await gw.waitLog(2);
    assert.deepEqual(log.map((l) => [l.route, l.status, l.errorCode]),
      [['/v1/chat/completions', 401, 'invalid_api_key'], ['/v1/messages', 401, 'invalid_api_key']]);
    assert.ok(!gw.stderr().includes('ak-wrong'), 'the presented key is not logged');
  });
