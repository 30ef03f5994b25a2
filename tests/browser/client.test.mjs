// The client module, herald.js: its SSE parser, backoff and reconnection rules in Node with a
// scripted fetch (exact and fast), then the real file as the server serves it, in Chromium,
// against the real binary: module and classic script, delivery, the lifecycle events (updated,
// deleted, archived) on both transports, a server restart with Last-Event-ID on both transports,
// resync, and backoff with Retry-After.
// Run: `node --test tests/browser/` (after `cargo build`). Token auth: auth.test.mjs.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Herald, { subscribe, SseParser, HeraldError, backoffDelay } from '../../web/herald.js';
import {
  Harness, WAIT, RECONNECT_WAIT, sleep, freshUser,
  blankPage, startClient, notificationsSeen, waitForNotifications, waitForClientState,
} from './harness.mjs';

// ---- in Node: the parser ------------------------------------------------------------------

function parseAll(chunks) {
  const out = [];
  const parser = new SseParser({
    onEvent: (e) => out.push(['event', e.type, e.data, e.id, e.lastEventId]),
    onRetry: (ms) => out.push(['retry', ms]),
    onComment: (text) => out.push(['comment', text]),
  });
  for (const chunk of chunks) parser.push(chunk);
  return out;
}

describe('SseParser', () => {
  const wire = '\ufeffretry: 3000\r\n: heartbeat\r\n\r\nid: 7\nevent: notification\ndata: {"a":1}\n\n'
    + 'event: multi\rdata: one\rdata:two\r\rdata\r\n\r\nid\n\nevent: x\ndata: late\n\n';
  const expected = [
    ['retry', 3000],
    ['comment', 'heartbeat'],
    ['event', 'notification', '{"a":1}', '7', '7'],
    ['event', 'multi', 'one\ntwo', null, '7'],
    ['event', 'message', '', null, '7'],
    // `id` with no value resets the last event id; the next event carries the empty id.
    ['event', 'x', 'late', null, ''],
  ];

  test('reads CR, LF and CRLF lines, multi-line data, comments and retry', () => {
    assert.deepEqual(parseAll([wire]), expected);
  });

  test('gives the same events however the text is split, CRLF across chunks included', () => {
    assert.deepEqual(parseAll(wire.split('')), expected);
    for (let cut = 1; cut < wire.length; cut++) {
      assert.deepEqual(parseAll([wire.slice(0, cut), wire.slice(cut)]), expected, `split at ${cut}`);
    }
  });

  test('ignores an id with NUL, a retry that is not digits, unknown fields, and an unfinished event', () => {
    const out = parseAll(['id: 5\n\nid: 6\0x\nretry: 1s\nfoo: bar\ndata: kept\n\n', 'data: never ended\n']);
    assert.deepEqual(out, [['event', 'message', 'kept', null, '5']]);
  });

  test('keeps one leading space of a value only once, and a colon-less field has an empty value', () => {
    assert.deepEqual(parseAll(['data:  two spaces\ndata\n\n']), [['event', 'message', ' two spaces\n', null, '']]);
  });
});

describe('backoffDelay', () => {
  test('is full jitter under a cap that doubles from the base up to the maximum', () => {
    const top = () => 0.999999;
    assert.deepEqual([1, 2, 3, 4, 5, 6].map((n) => backoffDelay(n, 1000, 10_000, top)), [999, 1999, 3999, 7999, 9999, 9999]);
    assert.deepEqual([1, 2, 3].map((n) => backoffDelay(n, 1000, 10_000, () => 0)), [0, 0, 0]);
    assert.equal(backoffDelay(2, 1000, 10_000, () => 0.5), 1000);
    assert.equal(backoffDelay(1e6, 1000, 10_000, top), 9999, 'no overflow on a huge attempt count');
    for (let i = 0; i < 200; i++) {
      const d = backoffDelay(3, 500, 60_000);
      assert.ok(d >= 0 && d < 2000 && Number.isInteger(d), `${d}`);
    }
  });
});

// ---- in Node: subscribe() against a scripted fetch -----------------------------------------

/**
 * A fetch whose answers are scripted: each call takes the next entry, either
 * `{ status, headers, body: string[] }` (a body that ends after its chunks), `{ hang: chunks }`
 * (a body that stays open after them until aborted), or `{ error }`. Every call is recorded.
 */
function scriptedFetch(script) {
  const calls = [];
  const fetchImpl = async (url, init) => {
    const headers = init.headers || {};
    calls.push({ url: String(url), headers: { ...headers } });
    const step = script.shift();
    if (!step) return new Promise(() => {}); // nothing more: never answers
    if (step.error) throw step.error;
    const encoder = new TextEncoder();
    const chunks = step.body || step.hang || [];
    const body = new ReadableStream({
      start(controller) {
        for (const c of chunks) controller.enqueue(encoder.encode(c));
        if (!step.hang) controller.close();
        init.signal?.addEventListener('abort', () => {
          try { controller.error(new DOMException('aborted', 'AbortError')); } catch (_) { /* closed */ }
        });
      },
    });
    return new Response(body, {
      status: step.status || 200,
      headers: { 'content-type': 'text/event-stream', ...(step.headers || {}) },
    });
  };
  return { fetchImpl, calls };
}

/** Subscribes with a recorder; resolves helpers to wait on what it saw. */
function record(options) {
  const seen = { events: [], states: [], errors: [], resyncs: [], reauths: [] };
  const waiters = [];
  const check = () => {
    for (const w of [...waiters]) if (w.pred()) { waiters.splice(waiters.indexOf(w), 1); w.resolve(); }
  };
  const sub = subscribe({
    onEvent: (e) => { seen.events.push(e); check(); },
    onStateChange: (state, info) => { seen.states.push({ state, ...info }); check(); },
    onError: (err) => { seen.errors.push(err); check(); },
    onResync: (r, e) => { seen.resyncs.push({ data: r, id: e.id }); check(); },
    ...options,
  });
  const until = (pred, what, ms = 5000) => new Promise((resolve, reject) => {
    if (pred()) return resolve();
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
    waiters.push({ pred, resolve: () => { clearTimeout(timer); resolve(); } });
  });
  return { sub, seen, until };
}

const CONNECTED = 'retry: 3000\nevent: connected\ndata: {"clientId":"c1"}\n\n';
const note = (id, title) => `id: ${id}\nevent: notification\ndata: ${JSON.stringify({ id: `n${id}`, title })}\n\n`;

describe('subscribe() with a scripted fetch', () => {
  test('the module and its default export agree, and bad options throw at once', () => {
    assert.equal(Herald.subscribe, subscribe);
    assert.equal(Herald.HeraldError, HeraldError);
    assert.throws(() => subscribe({}), /needs `url`, `user`, or `token`/);
    assert.throws(() => subscribe({ user: 'a', transport: 'carrier-pigeon' }), /transport/);
    assert.throws(() => subscribe({ token: 't', transport: 'eventsource' }), /Authorization/);
  });

  test('sends Last-Event-ID and Authorization, resumes from the last id after the stream ends', async () => {
    const { fetchImpl, calls } = scriptedFetch([
      { body: [CONNECTED, note(4, 'four'), note(5, 'five')] },
      { hang: [CONNECTED, note(6, 'six')] },
    ]);
    const { sub, seen, until } = record({
      server: 'http://herald.test/', token: 'a.b.c', lastEventId: 3, fetch: fetchImpl, backoff: { baseMs: 10 },
    });
    await until(() => seen.events.filter((e) => e.type === 'notification').length === 3, 'three notifications');
    sub.close();
    assert.deepEqual(calls.map((c) => c.url), ['http://herald.test/events/me', 'http://herald.test/events/me']);
    assert.deepEqual(calls.map((c) => c.headers['Last-Event-ID']), ['3', '5']);
    assert.deepEqual(calls.map((c) => c.headers.Authorization), ['Bearer a.b.c', 'Bearer a.b.c']);
    assert.deepEqual(seen.events.map((e) => [e.type, e.id]),
      [['connected', null], ['notification', '4'], ['notification', '5'], ['connected', null], ['notification', '6']]);
    assert.deepEqual(seen.events[1].data, { id: 'n4', title: 'four' });
    assert.equal(sub.lastEventId, '6');
    assert.deepEqual(seen.states.map((s) => s.state), ['connecting', 'open', 'reconnecting', 'open', 'closed']);
    assert.equal(seen.states.at(-1).reason, 'closed');
  });

  test("the server's retry: is the backoff base, and Retry-After is a floor", async () => {
    const realRandom = Math.random;
    Math.random = () => 0.999;
    try {
      const { fetchImpl, calls } = scriptedFetch([
        { body: ['retry: 40\n', CONNECTED.replace('retry: 3000\n', '')] },
        { error: new TypeError('connection refused') },
        { status: 503, headers: { 'retry-after': '1', 'content-type': 'application/json' }, body: ['{"error":"busy"}'] },
        { hang: [CONNECTED] },
      ]);
      const { sub, seen, until } = record({ user: 'a b', url: undefined, server: 'http://h', fetch: fetchImpl, backoff: { baseMs: 60_000 } });
      await until(() => seen.states.filter((s) => s.state === 'open').length === 2, 'the second open', 5000);
      sub.close();
      assert.equal(calls[0].url, 'http://h/events/a%20b');
      const retries = seen.states.filter((s) => s.state === 'reconnecting')
        .map(({ attempt, delayMs, status }) => ({ attempt, delayMs, status }));
      // Not 60 s: the stream said `retry: 40`. The 503's Retry-After: 1 outweighs its 159 ms.
      assert.deepEqual(retries, [
        { attempt: 1, delayMs: 39, status: null },
        { attempt: 2, delayMs: 79, status: null },
        { attempt: 3, delayMs: 1000, status: 503 },
      ]);
      assert.equal(seen.states.find((s) => s.status === 503).error.message, 'busy');
    } finally {
      Math.random = realRandom;
    }
  });

  test('401 calls onError once and stops: no retry', async () => {
    const { fetchImpl, calls } = scriptedFetch([
      { status: 401, headers: { 'content-type': 'application/json' }, body: ['{"error":"the token has expired"}'] },
    ]);
    const { seen, until } = record({ token: () => 'x.y.z', fetch: fetchImpl, url: 'http://h/events/me' });
    await until(() => seen.errors.length === 1, 'onError');
    await sleep(100);
    assert.equal(calls.length, 1);
    assert.ok(seen.errors[0] instanceof HeraldError);
    assert.deepEqual([seen.errors[0].status, seen.errors[0].message], [401, 'the token has expired']);
    assert.deepEqual(seen.states.map((s) => [s.state, s.reason ?? null, s.status ?? null]),
      [['connecting', null, null], ['closed', 'error', 401]]);
  });

  test('reauth: a token from onReauth resumes from the last id; none closes the subscription', async () => {
    const reauthWire = 'event: reauth\ndata: {"reason":"token expired"}\n\n';
    const { fetchImpl, calls } = scriptedFetch([
      { hang: [CONNECTED, note(9, 'nine'), reauthWire] },
      { hang: [CONNECTED, note(10, 'ten'), reauthWire] },
    ]);
    const tokens = ['fresh.token.two'];
    const reauths = [];
    const { seen, until } = record({
      url: 'http://h/events/me', token: 'old.token.one', fetch: fetchImpl,
      onReauth: async (r) => { reauths.push(r); return tokens.shift(); },
    });
    await until(() => seen.states.at(-1)?.state === 'closed', 'closed after the second reauth');
    assert.deepEqual(reauths, [{ reason: 'token expired' }, { reason: 'token expired' }]);
    assert.deepEqual(calls.map((c) => [c.headers.Authorization, c.headers['Last-Event-ID'] ?? null]),
      [['Bearer old.token.one', null], ['Bearer fresh.token.two', '9']]);
    assert.deepEqual(seen.states.map((s) => [s.state, s.reason ?? null]),
      [['connecting', null], ['open', null], ['reconnecting', 'reauth'], ['open', null], ['reconnecting', 'reauth'], ['closed', 'reauth']]);
  });

  test('idleTimeoutMs: a stream silent for that long (no event, no heartbeat) is dropped and resumed', async () => {
    const { fetchImpl, calls } = scriptedFetch([
      { hang: [CONNECTED, note(1, 'one')] },
      { hang: [CONNECTED, ': heartbeat\n\n'] },
    ]);
    const { sub, seen, until } = record({
      url: 'http://h/events/u', fetch: fetchImpl, idleTimeoutMs: 150, backoff: { baseMs: 1 },
    });
    await until(() => calls.length === 2, 'a second connection');
    const reconnecting = seen.states.filter((s) => s.state === 'reconnecting');
    assert.equal(reconnecting.length, 1);
    assert.equal(reconnecting[0].error.name, 'AbortError');
    assert.equal(calls[1].headers['Last-Event-ID'], '1');
    sub.close();
  });

  test('updated, deleted and archived reach onUpdate, onDelete and onArchive with their ids', async () => {
    const changed = { id: 'n1', type: 'warning', title: 'corrected', message: 'm', timestamp: '2026-01-01T00:00:00.000Z', read: false, category: 'billing', updatedAt: '2026-01-01T00:01:00.000Z' };
    const { fetchImpl } = scriptedFetch([
      { hang: [CONNECTED, note(1, 'one'),
        `id: 2\nevent: updated\ndata: ${JSON.stringify(changed)}\n\n`,
        'id: 3\nevent: archived\ndata: {"ids":["n1"],"archived":true}\n\n',
        'id: 4\nevent: deleted\ndata: {"ids":["n1"]}\n\n',
        'id: 5\nevent: deleted\ndata: {"ids":["n7","n8"],"reason":"expired"}\n\n'] },
    ]);
    const lifecycle = [];
    const { sub, seen, until } = record({
      url: 'http://h/events/u', fetch: fetchImpl,
      onUpdate: (n, e) => lifecycle.push(['onUpdate', n, e.id, e.type]),
      onDelete: (d, e) => lifecycle.push(['onDelete', d, e.id, e.type]),
      onArchive: (a, e) => lifecycle.push(['onArchive', a, e.id, e.type]),
    });
    await until(() => seen.events.length === 6, 'six events');
    sub.close();
    assert.deepEqual(lifecycle, [
      ['onUpdate', changed, '2', 'updated'],
      ['onArchive', { ids: ['n1'], archived: true }, '3', 'archived'],
      ['onDelete', { ids: ['n1'] }, '4', 'deleted'],
      ['onDelete', { ids: ['n7', 'n8'], reason: 'expired' }, '5', 'deleted'],
    ]);
    assert.deepEqual(seen.events.map((e) => e.type), ['connected', 'notification', 'updated', 'archived', 'deleted', 'deleted']);
    assert.equal(sub.lastEventId, '5');
  });

  test('a resync moves lastEventId to its id and reaches onResync', async () => {
    const { fetchImpl } = scriptedFetch([
      { hang: [CONNECTED, 'id: 77\nevent: resync\ndata: {"reason":"unknown id","oldestId":"12"}\n\n'] },
    ]);
    const { sub, seen, until } = record({ url: 'http://h/events/u', lastEventId: '999', fetch: fetchImpl });
    await until(() => seen.resyncs.length === 1, 'onResync');
    sub.close();
    assert.deepEqual(seen.resyncs, [{ data: { reason: 'unknown id', oldestId: '12' }, id: '77' }]);
    assert.equal(sub.lastEventId, '77');
  });
});

// ---- in Chromium, against the real server ---------------------------------------------------

const h = new Harness({ args: ['--retry-ms', '400'] });
before(() => h.setup());
after(() => h.teardown());

test('/herald.js imports as a module, /herald.global.js sets window.Herald, /herald.d.ts has the types', { timeout: 30_000 }, async () => {
  for (const [file, type] of [['/herald.js', 'text/javascript; charset=utf-8'], ['/herald.global.js', 'text/javascript; charset=utf-8'], ['/herald.d.ts', 'application/typescript; charset=utf-8']]) {
    const res = await h.api('GET', file);
    assert.equal(res.status, 200, file);
    assert.equal(res.headers.get('content-type'), type, file);
    assert.equal(res.headers.get('cache-control'), 'no-cache', file);
    assert.equal(res.headers.get('x-content-type-options'), 'nosniff', file);
    assert.match(res.headers.get('etag'), /^"[0-9a-f]{24}"$/, file);
    const again = await h.api('GET', file, undefined, { 'if-none-match': res.headers.get('etag') });
    assert.equal(again.status, 304, `${file} revalidates`);
  }
  const types = await h.api('GET', '/herald.d.ts');
  assert.match(types.body, /export function subscribe\(options: SubscribeOptions\): Subscription;/);

  const page = await blankPage(h);
  const exported = await page.evaluate(async () => {
    const mod = await import('/herald.js');
    return { names: Object.keys(mod).sort(), same: mod.default.subscribe === mod.subscribe, global: typeof window.Herald };
  });
  assert.deepEqual(exported, {
    names: ['HeraldError', 'SseParser', 'backoffDelay', 'default', 'disablePush', 'enablePush', 'pushStatus', 'subscribe'],
    same: true,
    global: 'undefined',
  });
  await page.addScriptTag({ url: '/herald.global.js' });
  assert.deepEqual(await page.evaluate(() => Object.keys(window.Herald).sort()),
    ['HeraldError', 'SseParser', 'backoffDelay', 'disablePush', 'enablePush', 'pushStatus', 'subscribe']);
  await h.closePage(page);
});

test('a subscription sees connected, then notifications and announcements in order with their ids', { timeout: 30_000 }, async () => {
  const user = freshUser('client');
  const page = await blankPage(h);
  await startClient(page, { user });
  await waitForClientState(page, 'open');
  await page.waitForFunction(() => window.rec.events.length === 1);
  const first = await h.publish(user, { title: 'first', message: 'one' });
  const announced = await h.api('POST', '/api/broadcast', { title: 'to all', message: 'hello' });
  assert.equal(announced.status, 200);
  const second = await h.publish(user, { title: 'second', message: 'two' });
  await waitForNotifications(page, 2);
  const events = await page.evaluate(() => window.rec.events);
  assert.deepEqual(events.map((e) => e.type), ['connected', 'notification', 'announcement', 'notification']);
  assert.equal(events[0].id, null);
  assert.deepEqual([events[1].data.id, events[3].data.id], [first.id, second.id]);
  assert.deepEqual(events[2].data.title, 'to all');
  const ids = events.slice(1).map((e) => e.id);
  assert.ok(ids.every((id) => /^\d[\d-]*$/.test(id)), `event ids: ${ids}`);
  assert.equal(await page.evaluate(() => window.sub.lastEventId), ids[2]);
  assert.deepEqual(await page.evaluate(() => window.rec.states.map((s) => s.state)), ['connecting', 'open']);
  await page.evaluate(() => window.sub.close());
  assert.equal(await page.evaluate(() => window.sub.state), 'closed');
  await h.closePage(page);
});

for (const transport of ['fetch', 'eventsource']) {
  test(`after a server restart the ${transport} transport reconnects with Last-Event-ID and delivers each event once`, { timeout: 90_000 }, async () => {
    const user = freshUser(`restart-${transport}`);
    const page = await blankPage(h);
    const streamRequests = [];
    page.on('request', (r) => {
      if (new URL(r.url()).pathname.startsWith('/events/')) streamRequests.push({ url: r.url(), headers: r.headers() });
    });
    await startClient(page, { user, transport, backoff: { maxMs: 2000 } });
    await waitForClientState(page, 'open');
    const before = await h.publish(user, { title: 'before', message: 'seen live' });
    await waitForNotifications(page, 1);
    const lastId = await page.evaluate(() => window.sub.lastEventId);
    assert.match(lastId, /^\d[\d-]*$/);

    // Hold the client off while the server restarts and two more are published, so they can
    // only reach it through replay.
    await page.route('**/events/**', (route) => route.abort('connectionrefused'));
    const stopped = await h.stop();
    assert.deepEqual(stopped, { code: 0, signal: null });
    await waitForClientState(page, 'reconnecting');
    await h.start();
    const away1 = await h.publish(user, { title: 'away 1', message: 'replayed' });
    const away2 = await h.publish(user, { title: 'away 2', message: 'replayed' });
    await page.unroute('**/events/**');
    await waitForClientState(page, 'open', 2, RECONNECT_WAIT);
    await waitForNotifications(page, 3, RECONNECT_WAIT);
    const after = await h.publish(user, { title: 'after', message: 'live again' });
    await waitForNotifications(page, 4);
    await sleep(300);
    assert.deepEqual(await notificationsSeen(page).then((ns) => ns.map((n) => n.title)), ['before', 'away 1', 'away 2', 'after']);
    const ids = (await page.evaluate(() => window.rec.events.filter((e) => e.type === 'notification').map((e) => e.data.id)));
    assert.deepEqual(ids, [before.id, away1.id, away2.id, after.id]);

    // Every attempt after the first, refused or not, asked to resume after the last id seen.
    const resumed = streamRequests.slice(1);
    assert.ok(resumed.length >= 1, 'a reconnect attempt');
    for (const r of resumed) {
      const asked = transport === 'fetch' ? r.headers['last-event-id'] : new URL(r.url).searchParams.get('lastEventId');
      assert.equal(asked, lastId, r.url);
    }
    assert.equal(streamRequests[0].headers['last-event-id'], undefined);
    const reconnecting = await page.evaluate(() => window.rec.states.filter((s) => s.state === 'reconnecting'));
    assert.deepEqual(reconnecting.map((s) => s.attempt), reconnecting.map((_, i) => i + 1), 'attempts count up from 1');
    // Over fetch the server's `retry: 400` is the base; EventSource hides it, so the default
    // 1000 is. Caps double from there up to maxMs 2000.
    const base = transport === 'fetch' ? 400 : 1000;
    for (const s of reconnecting) {
      assert.ok(s.delayMs >= 0 && s.delayMs < Math.min(2000, base * 2 ** (s.attempt - 1)), JSON.stringify(s));
    }
    await page.evaluate(() => window.sub.close());
    await h.closePage(page);
  });
}

/** Waits until the recorder `name` holds `n` lifecycle callbacks. */
function waitForLifecycle(page, n, { name = 'rec', timeout = WAIT } = {}) {
  return page.waitForFunction(([key, want]) => window[key].lifecycle.length >= want, [name, n], { timeout });
}

const EXPIRY_WAIT = 15_000; // expiry is checked every 2 s; `deleted` follows within a few seconds

for (const transport of ['fetch', 'eventsource']) {
  test(`over ${transport}, an update, an archive, an unarchive, a delete and an expiry reach their callbacks, also replayed`, { timeout: 60_000 }, async () => {
    const user = freshUser(`lifecycle-${transport}`);
    const base = `/api/notifications/${user}`;
    const page = await blankPage(h);
    await startClient(page, { user, transport });
    await waitForClientState(page, 'open');
    const sent = await h.publish(user, { title: 'Invoice due', message: 'INV-7', category: 'billing', data: { invoice: 7, lines: [1, 2] } });
    assert.equal(sent.category, 'billing');
    assert.deepEqual(sent.data, { invoice: 7, lines: [1, 2] });
    await waitForNotifications(page, 1);

    const patched = await h.api('PATCH', `${base}/${sent.id}`, { title: 'Invoice overdue', type: 'warning', category: 'billing.late' });
    assert.equal(patched.status, 200, JSON.stringify(patched.body));
    assert.equal(patched.body.title, 'Invoice overdue');
    assert.equal(typeof patched.body.updatedAt, 'string');
    const archived = await h.api('POST', `${base}/${sent.id}/archive`);
    assert.deepEqual([archived.status, archived.body], [200, { id: sent.id, archived: true }]);
    const unarchived = await h.api('POST', `${base}/${sent.id}/unarchive`);
    assert.deepEqual([unarchived.status, unarchived.body], [200, { id: sent.id, archived: false }]);
    await waitForLifecycle(page, 3);

    // A second subscription resuming after the notification gets the changes replayed, with
    // the same ids, then goes on live.
    const notificationId = (await page.evaluate(() => window.rec.events))[1].id;
    await startClient(page, { user, transport, lastEventId: notificationId }, 'replay');
    await waitForLifecycle(page, 3, { name: 'replay' });

    const deleted = await h.api('DELETE', `${base}/${sent.id}`);
    assert.equal(deleted.status, 204);
    await waitForLifecycle(page, 4);
    const expiring = await h.publish(user, { title: 'Flash sale', message: 'one second only', ttl: 1 });
    assert.equal(typeof expiring.expiresAt, 'string');
    await waitForLifecycle(page, 5, { timeout: EXPIRY_WAIT });
    await waitForLifecycle(page, 5, { name: 'replay' });
    await sleep(300); // a stray extra callback would show up by now

    const events = await page.evaluate(() => window.rec.events);
    const types = ['connected', 'notification', 'updated', 'archived', 'archived', 'deleted', 'notification', 'deleted'];
    assert.deepEqual(events.map((e) => e.type), types);
    const ids = events.map((e) => e.id);
    assert.ok(ids.slice(1).every((id) => /^\d[\d-]*$/.test(id)), `event ids: ${ids}`);
    const lifecycle = await page.evaluate(() => window.rec.lifecycle);
    assert.deepEqual(lifecycle, [
      ['onUpdate', patched.body, ids[2]],
      ['onArchive', { ids: [sent.id], archived: true }, ids[3]],
      ['onArchive', { ids: [sent.id], archived: false }, ids[4]],
      ['onDelete', { ids: [sent.id] }, ids[5]],
      ['onDelete', { ids: [expiring.id], reason: 'expired' }, ids[7]],
    ]);
    assert.equal(await page.evaluate(() => window.sub.lastEventId), ids[7]);
    const replayed = await page.evaluate(() => window.replay.events);
    assert.deepEqual(replayed.map((e) => [e.type, e.id]), [['connected', null], ...types.slice(2).map((t, i) => [t, ids[i + 2]])]);
    assert.deepEqual(await page.evaluate(() => window.replay.lifecycle), lifecycle);

    // Resuming from the same point now: what was deleted or expired meanwhile comes back only
    // as its deletion, never as a notification or its changes.
    await startClient(page, { user, transport, lastEventId: notificationId }, 'late');
    await waitForLifecycle(page, 2, { name: 'late' });
    await sleep(300);
    assert.deepEqual((await page.evaluate(() => window.late.events)).map((e) => [e.type, e.id]),
      [['connected', null], ['deleted', ids[5]], ['deleted', ids[7]]]);
    assert.deepEqual(await page.evaluate(() => window.late.lifecycle), [lifecycle[3], lifecycle[4]]);
    await page.evaluate(() => { window.sub.close(); window.replaySub.close(); window.lateSub.close(); });
    await h.closePage(page);
  });
}

test('a resync for an unknown id reaches onResync, and the stream goes on from its id', { timeout: 30_000 }, async () => {
  const user = freshUser('resync');
  await h.publish(user, { title: 'old', message: 'stored' });
  const history = await h.api('GET', `/api/notifications/${user}`);
  const page = await blankPage(h);
  await startClient(page, { user, lastEventId: '999999999' });
  await page.waitForFunction(() => window.rec.resyncs.length === 1, null, { timeout: WAIT });
  const [resync] = await page.evaluate(() => window.rec.resyncs);
  assert.equal(resync.id, history.body.lastEventId, 'the resync id is the newest id');
  assert.equal(typeof resync.data.reason, 'string');
  assert.equal(typeof resync.data.oldestId, 'string');
  assert.equal(await page.evaluate(() => window.sub.lastEventId), resync.id);
  const live = await h.publish(user, { title: 'new', message: 'live' });
  await waitForNotifications(page, 1);
  assert.deepEqual(await notificationsSeen(page), [{ id: (await page.evaluate(() => window.sub.lastEventId)), title: 'new' }]);
  assert.equal((await page.evaluate(() => window.rec.events.at(-1).data.id)), live.id);
  await page.evaluate(() => window.sub.close());
  await h.closePage(page);
});

test('refused attempts back off with full jitter under a doubling cap and honour Retry-After', { timeout: 60_000 }, async () => {
  const user = freshUser('backoff');
  const page = await blankPage(h);
  const answers = ['abort', 'abort', 'abort', 'abort', 503];
  const requestTimes = [];
  await page.route('**/events/**', (route) => {
    requestTimes.push(Date.now());
    const answer = answers.shift();
    if (answer === undefined) return route.continue();
    if (answer === 'abort') return route.abort('connectionrefused');
    return route.fulfill({ status: 503, contentType: 'application/json', headers: { 'retry-after': '1' }, body: '{"error":"busy"}' });
  });
  await startClient(page, { user, backoff: { baseMs: 200, maxMs: 500 } });
  await waitForClientState(page, 'open', 1, RECONNECT_WAIT);
  const states = await page.evaluate(() => window.rec.states);
  const retries = states.filter((s) => s.state === 'reconnecting');
  assert.deepEqual(retries.map((s) => [s.attempt, s.status]), [[1, null], [2, null], [3, null], [4, null], [5, 503]]);
  const caps = [200, 400, 500, 500];
  retries.slice(0, 4).forEach((s, i) => assert.ok(s.delayMs >= 0 && s.delayMs < caps[i], `attempt ${s.attempt}: ${s.delayMs} ms`));
  assert.ok(retries[4].delayMs >= 1000, `Retry-After: 1 is a floor, got ${retries[4].delayMs} ms`);
  assert.equal(requestTimes.length, 6);
  for (let i = 0; i < retries.length; i++) {
    const gap = requestTimes[i + 1] - requestTimes[i];
    assert.ok(gap >= retries[i].delayMs - 20, `gap ${i}: ${gap} ms for a delay of ${retries[i].delayMs} ms`);
  }
  assert.deepEqual(await page.evaluate(() => window.rec.errors), []);
  await page.evaluate(() => window.sub.close());
  await h.closePage(page);
});
