// Drives the page at `/` in headless Chromium against the real herald binary: live delivery,
// text-only rendering, read state across tabs, history + stream without gaps or duplicates,
// and recovery after a server restart. Run: `node --test tests/browser/` (after `cargo build`).
//
// Env: HERALD_BIN (default target/debug/herald), CHROMIUM (default /usr/bin/chromium),
// HERALD_SCREENSHOTS=1 to also write docs/screenshots/page-{desktop,phone}.png.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, mkdir, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '..', '..');
const heraldBin = path.resolve(repoRoot, process.env.HERALD_BIN || 'target/debug/herald');
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

const STARTUP_TIMEOUT = 20_000;
const WAIT = 10_000;         // one UI expectation
const RECONNECT_WAIT = 30_000; // a page noticing a restarted server

let dataDir;
let server;   // { proc, url, port, output }
let browser;
const openPages = new Set();

// ---- the server ---------------------------------------------------------------------------

function serverEnv() {
  // Only flags on the command line decide how the server runs.
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('HERALD_') && k !== 'PORT') env[k] = v;
  }
  return env;
}

function startServer(listen) {
  return new Promise((resolve, reject) => {
    const proc = spawn(heraldBin, ['serve', '--listen', listen, '--data-dir', dataDir], {
      env: serverEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const output = [];
    let settled = false;
    const timer = setTimeout(() => {
      fail(new Error(`no "listening on" line within ${STARTUP_TIMEOUT} ms`));
    }, STARTUP_TIMEOUT);
    function fail(err) {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      proc.kill('SIGKILL');
      err.message += `\n--- server output ---\n${output.join('')}`;
      reject(err);
    }
    let stdoutBuf = '';
    proc.stdout.setEncoding('utf8');
    proc.stdout.on('data', (chunk) => {
      output.push(chunk);
      stdoutBuf += chunk;
      const m = stdoutBuf.replace(/\x1b\[[0-9;]*m/g, '').match(/listening on (http:\/\/[^\s]+)/);
      if (m && !settled) {
        settled = true;
        clearTimeout(timer);
        const url = m[1].replace(/\/$/, '');
        resolve({ proc, url, port: Number(new URL(url).port), output });
      }
    });
    proc.stderr.setEncoding('utf8');
    proc.stderr.on('data', (chunk) => output.push(chunk));
    proc.on('error', (err) => fail(err));
    proc.on('exit', (code, signal) => fail(new Error(`server exited early (code ${code}, signal ${signal})`)));
  });
}

// Stops the one process this suite started, by its PID; SIGKILL only if it overstays.
function stopServer(s, timeoutMs = 15_000) {
  return new Promise((resolve) => {
    if (!s || s.proc.exitCode !== null || s.proc.signalCode !== null) return resolve(null);
    const timer = setTimeout(() => s.proc.kill('SIGKILL'), timeoutMs);
    s.proc.once('exit', (code, signal) => { clearTimeout(timer); resolve({ code, signal }); });
    s.proc.kill('SIGTERM');
  });
}

async function api(method, urlPath, body) {
  const res = await fetch(server.url + urlPath, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(WAIT),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

async function publish(user, fields) {
  const res = await api('POST', `/api/notifications/${encodeURIComponent(user)}`, { type: 'info', ...fields });
  assert.equal(res.status, 201, `publish answered ${res.status}: ${JSON.stringify(res.body)}`);
  return res.body;
}

// ---- the browser --------------------------------------------------------------------------

let userSeq = 0;
function freshUser(name) {
  userSeq += 1;
  return `${name}-${process.pid}-${userSeq}`;
}

async function openPage(user, { viewport = { width: 1280, height: 800 }, waitLive = true } = {}) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.errors = [];
  page.on('pageerror', (err) => page.errors.push(String(err)));
  openPages.add(page);
  await page.goto(`${server.url}/?user=${encodeURIComponent(user)}`, { timeout: WAIT });
  if (waitLive) await waitForState(page, 'live');
  return page;
}

async function closePage(page) {
  openPages.delete(page);
  assert.deepEqual(page.errors, [], 'the page threw');
  await page.context().close();
}

function waitForState(page, state, timeout = WAIT) {
  return page.waitForSelector(`#conn-state[data-state="${state}"]`, { timeout });
}

// Waits until #list holds exactly `n` items.
function waitForCount(page, n, timeout = WAIT) {
  return page.waitForFunction(
    (want) => document.querySelectorAll('#list li[data-id]').length === want, n, { timeout });
}

function waitForBadge(page, text, timeout = WAIT) {
  return page.waitForFunction(
    (want) => document.querySelector('#unread-count').textContent.trim() === want, text, { timeout });
}

// Every item of #list, top to bottom.
function listItems(page) {
  return page.$$eval('#list li[data-id]', (lis) => lis.map((li) => ({
    id: li.dataset.id,
    title: li.querySelector('.title').textContent,
    message: li.querySelector('.message').textContent,
    unread: li.classList.contains('unread'),
  })));
}

async function badge(page) {
  return (await page.textContent('#unread-count')).trim();
}

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

// ---- setup --------------------------------------------------------------------------------

before(async () => {
  assert.ok(existsSync(heraldBin), `no server binary at ${heraldBin}: run \`cargo build\` or set HERALD_BIN`);
  assert.ok(existsSync(chromiumPath), `no Chromium at ${chromiumPath}: install it or set CHROMIUM`);
  dataDir = await mkdtemp(path.join(tmpdir(), 'herald-browser-'));
  server = await startServer('127.0.0.1:0');
  browser = await chromium.launch({ executablePath: chromiumPath, args: CHROMIUM_ARGS, timeout: STARTUP_TIMEOUT });
});

after(async () => {
  for (const page of openPages) await page.context().close().catch(() => {});
  if (browser) await browser.close().catch(() => {});
  await stopServer(server);
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

// ---- behaviours ---------------------------------------------------------------------------

test('the connection indicator shows live once connected', { timeout: 30_000 }, async () => {
  const user = freshUser('live');
  const page = await openPage(user, { waitLive: false });
  await waitForState(page, 'live');
  assert.equal(await page.getAttribute('#conn-state', 'data-state'), 'live');
  assert.equal((await page.textContent('#conn-state')).trim(), 'Live');
  assert.equal(await page.inputValue('#user'), user);
  assert.equal(await badge(page), '0');
  assert.equal((await listItems(page)).length, 0);
  await closePage(page);
});

test('a notification published over HTTP appears live and counts as unread', { timeout: 30_000 }, async () => {
  const user = freshUser('alice');
  const page = await openPage(user);
  const sent = await publish(user, { title: 'Deploy finished', message: 'Build 42 is live', type: 'success', link: '/deploys/42' });
  await waitForCount(page, 1);
  await waitForBadge(page, '1');
  assert.deepEqual(await listItems(page), [
    { id: sent.id, title: 'Deploy finished', message: 'Build 42 is live', unread: true },
  ]);
  const li = `#list li[data-id="${sent.id}"]`;
  assert.equal(await page.getAttribute(li, 'data-type'), 'success');
  assert.equal((await page.textContent(`${li} .tag`)).trim(), 'Success', 'the type has a text label');
  assert.equal(await page.isVisible(`${li} .mark-read`), true);
  const link = await page.$eval(`${li} a`, (a) => ({ href: a.getAttribute('href'), rel: a.rel }));
  assert.deepEqual(link, { href: '/deploys/42', rel: 'noopener noreferrer' });
  const time = await page.$eval(`${li} time`, (t) => ({ text: t.textContent, title: t.title }));
  assert.equal(time.text, 'just now');
  assert.ok(time.title.length > 0, 'the absolute time is in a title attribute');
  await closePage(page);
});

test('notification text is shown as text, never as HTML', { timeout: 30_000 }, async () => {
  const user = freshUser('mallory');
  const title = '<img src=x onerror="window.__pwned=1">';
  const message = '<b>bold</b>';
  const page = await openPage(user);
  const sent = await publish(user, { title, message, type: 'error' });
  await waitForCount(page, 1);

  async function assertLiteral(p) {
    assert.deepEqual(await listItems(p), [{ id: sent.id, title, message, unread: true }]);
    assert.equal(await p.$$eval('#list img', (els) => els.length), 0, 'no <img> inside #list');
    assert.equal(await p.$$eval('#list b', (els) => els.length), 0, 'no <b> inside #list');
    await sleep(300); // let an injected onerror fire if there were one
    assert.equal(await p.evaluate(() => typeof window.__pwned), 'undefined');
  }
  await assertLiteral(page);

  // The same item rendered from history, not from the stream.
  await page.reload({ timeout: WAIT });
  await waitForState(page, 'live');
  await waitForCount(page, 1);
  await assertLiteral(page);
  await closePage(page);
});

test('marking read in one tab clears the badge in another tab of the same user', { timeout: 40_000 }, async () => {
  const user = freshUser('carol');
  const first = await publish(user, { title: 'Invoice paid', message: 'INV-1001', type: 'success' });
  const pageA = await openPage(user);
  const pageB = await openPage(user);
  for (const p of [pageA, pageB]) {
    await waitForCount(p, 1);
    await waitForBadge(p, '1');
  }

  await pageA.click(`#list li[data-id="${first.id}"] .mark-read`);
  await waitForBadge(pageA, '0');
  await waitForBadge(pageB, '0');
  await pageB.waitForSelector(`#list li[data-id="${first.id}"]:not(.unread)`, { timeout: WAIT });
  assert.equal(await pageA.isVisible(`#list li[data-id="${first.id}"] .mark-read`), false);

  const stored = await api('GET', `/api/notifications/${user}`);
  assert.equal(stored.status, 200);
  assert.equal(stored.body.unread, 0);
  assert.equal(stored.body.notifications[0].read, true);

  // Mark-all from the other tab, by keyboard.
  await publish(user, { title: 'Disk at 91%', message: 'db-2 /var', type: 'warning' });
  await publish(user, { title: 'Backup failed', message: 'nightly job', type: 'error' });
  for (const p of [pageA, pageB]) {
    await waitForCount(p, 3);
    await waitForBadge(p, '2');
  }
  await pageB.focus('#mark-all');
  await pageB.keyboard.press('Enter');
  await waitForBadge(pageB, '0');
  await waitForBadge(pageA, '0');
  await pageA.waitForFunction(() => document.querySelectorAll('#list li.unread').length === 0, null, { timeout: WAIT });
  assert.deepEqual((await listItems(pageA)).map((i) => i.unread), [false, false, false]);

  await closePage(pageA);
  await closePage(pageB);
});

test('history and stream together show every notification exactly once', { timeout: 40_000 }, async () => {
  const user = freshUser('dave');
  const older = [];
  let sinceTwo = null;
  for (const title of ['one', 'two', 'three']) {
    if (title === 'three') {
      const h = await api('GET', `/api/notifications/${user}`);
      assert.equal(h.status, 200);
      sinceTwo = h.body.lastEventId;
    }
    older.push(await publish(user, { title, message: `message ${title}` }));
    await sleep(5); // distinct timestamps, so newest-first order is well defined
  }
  assert.ok(sinceTwo !== null && sinceTwo !== undefined, 'history reports a lastEventId once events exist');

  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.errors = [];
  page.on('pageerror', (err) => page.errors.push(String(err)));
  openPages.add(page);

  // The page's first history read is answered with the older lastEventId from before 'three',
  // so the stream replays 'three' although history already holds it (the overlap the page must
  // absorb). And 'between' is published after the history read but before the stream opens:
  // the page gets it only from the replay.
  let between = null;
  let intercepted = 0;
  await page.route('**/api/notifications/**', async (route) => {
    if (route.request().method() !== 'GET' || intercepted++ > 0) return route.continue();
    const response = await route.fetch();
    const history = await response.json();
    assert.deepEqual(history.notifications.map((n) => n.title), ['three', 'two', 'one']);
    between = await publish(user, { title: 'between', message: 'published after the history read' });
    await route.fulfill({ status: 200, json: { ...history, lastEventId: sinceTwo } });
  });
  await page.goto(`${server.url}/?user=${encodeURIComponent(user)}`, { timeout: WAIT });
  await waitForState(page, 'live');
  await waitForCount(page, 4);
  assert.ok(between, 'the history request was intercepted');
  await waitForBadge(page, '4');

  const after = await publish(user, { title: 'four', message: 'published while live' });
  await waitForCount(page, 5);
  await sleep(500); // a late duplicate would show up by now
  const items = await listItems(page);
  assert.deepEqual(items.map((i) => i.title), ['four', 'between', 'three', 'two', 'one']);
  assert.deepEqual(items.map((i) => i.id), [after.id, between.id, ...older.map((n) => n.id).reverse()]);
  assert.equal(await badge(page), '5');
  await closePage(page);
});

test('a resync from the stream makes the page reload its history', { timeout: 40_000 }, async () => {
  const user = freshUser('grace');
  const sent = [];
  for (const title of ['first', 'second']) {
    sent.push(await publish(user, { title, message: `message ${title}` }));
    await sleep(5);
  }
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.errors = [];
  page.on('pageerror', (err) => page.errors.push(String(err)));
  openPages.add(page);
  // The first history read comes back empty and names an event id the server never issued:
  // the stream answers with `resync`, and the page must fetch the real history.
  let historyReads = 0;
  await page.route('**/api/notifications/**', async (route) => {
    if (route.request().method() !== 'GET') return route.continue();
    if (historyReads++ > 0) return route.continue();
    await route.fulfill({
      status: 200,
      json: { notifications: [], count: 0, total: 0, unread: 0, lastEventId: '999999999' },
    });
  });
  await page.goto(`${server.url}/?user=${encodeURIComponent(user)}`, { timeout: WAIT });
  await waitForState(page, 'live');
  await waitForCount(page, 2);
  await waitForBadge(page, '2');
  assert.equal(historyReads, 2);
  const later = await publish(user, { title: 'third', message: 'live after the resync' });
  await waitForCount(page, 3);
  await sleep(500);
  assert.deepEqual((await listItems(page)).map((i) => i.id), [later.id, sent[1].id, sent[0].id]);
  assert.equal(await badge(page), '3');
  await closePage(page);
});

test('a refused stream shows offline, then the page retries by itself', { timeout: 40_000 }, async () => {
  const user = freshUser('frank');
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.errors = [];
  page.on('pageerror', (err) => page.errors.push(String(err)));
  openPages.add(page);
  // EventSource gives up for good on a non-200 answer (as on the server's 429 or 503).
  let refused = 0;
  await page.route('**/events/**', (route) => {
    if (refused++ > 0) return route.continue();
    return route.fulfill({ status: 503, contentType: 'application/json', headers: { 'retry-after': '1' }, body: '{"error":"busy"}' });
  });
  await page.goto(`${server.url}/?user=${encodeURIComponent(user)}`, { timeout: WAIT });
  await waitForState(page, 'offline');
  const early = await publish(user, { title: 'while refused', message: 'comes from history' });
  await waitForState(page, 'live', RECONNECT_WAIT);
  assert.equal(refused, 2);
  await waitForCount(page, 1);
  const later = await publish(user, { title: 'after retry', message: 'comes from the stream' });
  await waitForCount(page, 2);
  assert.deepEqual((await listItems(page)).map((i) => i.id), [later.id, early.id]);
  await waitForBadge(page, '2');
  await closePage(page);
});

test('after a server restart the page goes live again and misses nothing', { timeout: 90_000 }, async () => {
  const user = freshUser('erin');
  const page = await openPage(user);
  const first = await publish(user, { title: 'before restart', message: 'one' });
  await waitForCount(page, 1);

  const { port } = server;
  const stopped = await stopServer(server);
  assert.deepEqual(stopped, { code: 0, signal: null }, 'SIGTERM ends the server with exit code 0');
  await page.waitForFunction(
    () => ['reconnecting', 'offline'].includes(document.querySelector('#conn-state').dataset.state),
    null, { timeout: WAIT });

  server = await startServer(`127.0.0.1:${port}`);
  // Published before the page is back: it reaches the page through replay.
  const whileAway = await publish(user, { title: 'while away', message: 'two' });
  await waitForState(page, 'live', RECONNECT_WAIT);
  const later = await publish(user, { title: 'after restart', message: 'three' });
  await waitForCount(page, 3, RECONNECT_WAIT);
  await sleep(500);
  const items = await listItems(page);
  assert.deepEqual(items.map((i) => i.title), ['after restart', 'while away', 'before restart']);
  assert.deepEqual(items.map((i) => i.id), [later.id, whileAway.id, first.id]);
  await waitForBadge(page, '3');
  await closePage(page);
});

test('screenshots of the page with every kind of notification', {
  timeout: 60_000,
  skip: process.env.HERALD_SCREENSHOTS === '1' ? false : 'set HERALD_SCREENSHOTS=1 to write them',
}, async () => {
  const user = 'demo-user';
  const outDir = path.join(repoRoot, 'docs', 'screenshots');
  await mkdir(outDir, { recursive: true });
  const samples = [
    { type: 'info', title: 'Weekly report is ready', message: 'Your analytics summary for last week is available.', link: '/reports/weekly' },
    { type: 'warning', title: 'Disk usage at 91%', message: 'Volume /var/lib/postgres on db-2 is almost full.' },
    { type: 'error', title: 'Payment failed', message: 'The card ending in 4242 was declined. Update it to keep your plan.', link: 'https://example.com/billing' },
    { type: 'success', title: 'Deploy finished', message: 'api@3f9c1e2 is live in production (2m 14s).' },
    { type: 'info', title: 'New comment on “Q3 roadmap”', message: 'Priya: Looks good — can we move the search work up?' },
  ];
  const sent = [];
  for (const s of samples) { sent.push(await publish(user, s)); await sleep(5); }
  await api('POST', `/api/notifications/${user}/${sent[0].id}/read`);

  const desktop = await openPage(user, { viewport: { width: 1280, height: 800 } });
  await waitForCount(desktop, samples.length);
  const phone = await openPage(user, { viewport: { width: 390, height: 844 } });
  await waitForCount(phone, samples.length);
  const res = await api('POST', '/api/broadcast', { title: 'Maintenance tonight', message: 'Expect a short outage at 23:00 UTC.' });
  assert.equal(res.status, 200);
  await publish(user, { type: 'success', title: 'Invoice paid', message: 'INV-2041 was paid in full.' });
  for (const p of [desktop, phone]) await waitForCount(p, samples.length + 2);

  await desktop.screenshot({ path: path.join(outDir, 'page-desktop.png') });
  await phone.screenshot({ path: path.join(outDir, 'page-phone.png') });
  await closePage(desktop);
  await closePage(phone);
});
