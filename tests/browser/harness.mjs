// What every browser test file shares: the real herald binary on port 0 (read from its
// `listening on` line), Debian's Chromium through playwright-core, and waits that all time out.
//
// Env: HERALD_BIN (default target/debug/herald), CHROMIUM (default /usr/bin/chromium).

import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '..', '..');
export const heraldBin = path.resolve(repoRoot, process.env.HERALD_BIN || 'target/debug/herald');
export const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

export const STARTUP_TIMEOUT = 20_000;
export const WAIT = 10_000;            // one UI expectation
export const RECONNECT_WAIT = 30_000;  // a page noticing a restarted server

export function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

let userSeq = 0;
/** A user id no other test uses. */
export function freshUser(name) {
  userSeq += 1;
  return `${name}-${process.pid}-${userSeq}`;
}

function serverEnv() {
  // Only flags on the command line decide how the server runs.
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('HERALD_') && k !== 'PORT') env[k] = v;
  }
  return env;
}

/** `herald token <user>`: a subscriber token signed with `secret`. */
export function mintToken(user, secret, ttl = '1h') {
  return new Promise((resolve, reject) => {
    execFile(heraldBin, ['token', user, '--jwt-secret', secret, '--ttl', ttl],
      { env: serverEnv(), timeout: WAIT }, (err, stdout, stderr) => {
        if (err) return reject(new Error(`herald token failed: ${err.message}\n${stderr}`));
        const token = stdout.trim();
        assert.match(token, /^[\w-]+\.[\w-]+\.[\w-]+$/, 'herald token prints one JWT');
        resolve(token);
      });
  });
}

/** Starts `herald serve` on `listen` with `dataDir` and extra flags; resolves once it listens. */
export function startServer({ listen, dataDir, args = [] }) {
  return new Promise((resolve, reject) => {
    const proc = spawn(heraldBin, ['serve', '--listen', listen, '--data-dir', dataDir, ...args], {
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

/** Stops the one process a test started, by its PID; SIGKILL only if it overstays. */
export function stopServer(s, timeoutMs = 15_000) {
  return new Promise((resolve) => {
    if (!s || s.proc.exitCode !== null || s.proc.signalCode !== null) return resolve(null);
    const timer = setTimeout(() => s.proc.kill('SIGKILL'), timeoutMs);
    s.proc.once('exit', (code, signal) => { clearTimeout(timer); resolve({ code, signal }); });
    s.proc.kill('SIGTERM');
  });
}

/**
 * One server (with `args`, and `publishKey` sent on every API call when given) and one browser
 * for a test file. `setup()` in `before`, `teardown()` in `after`.
 */
export class Harness {
  constructor({ args = [], publishKey = null } = {}) {
    this.args = publishKey ? [...args, '--publish-key', publishKey] : args;
    this.publishKey = publishKey;
    this.server = null;
    this.browser = null;
    this.dataDir = null;
    this.pages = new Set();
  }

  get url() { return this.server.url; }

  async setup() {
    assert.ok(existsSync(heraldBin), `no server binary at ${heraldBin}: run \`cargo build\` or set HERALD_BIN`);
    assert.ok(existsSync(chromiumPath), `no Chromium at ${chromiumPath}: install it or set CHROMIUM`);
    this.dataDir = await mkdtemp(path.join(tmpdir(), 'herald-browser-'));
    this.server = await startServer({ listen: '127.0.0.1:0', dataDir: this.dataDir, args: this.args });
    this.browser = await chromium.launch({ executablePath: chromiumPath, args: CHROMIUM_ARGS, timeout: STARTUP_TIMEOUT });
  }

  async teardown() {
    for (const page of this.pages) await page.context().close().catch(() => {});
    if (this.browser) await this.browser.close().catch(() => {});
    await stopServer(this.server);
    if (this.dataDir) await rm(this.dataDir, { recursive: true, force: true });
  }

  /** SIGTERM, then the same binary on the same port and data: resolves the old exit status. */
  async stop() { return stopServer(this.server); }

  async start() {
    const { port } = this.server;
    this.server = await startServer({ listen: `127.0.0.1:${port}`, dataDir: this.dataDir, args: this.args });
  }

  async api(method, urlPath, body, headers = {}) {
    const all = { ...headers };
    if (this.publishKey && !('authorization' in all)) all.authorization = `Bearer ${this.publishKey}`;
    if (body !== undefined) all['content-type'] = 'application/json';
    const res = await fetch(this.server.url + urlPath, {
      method,
      headers: all,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(WAIT),
    });
    const text = await res.text();
    let parsed = null;
    try { parsed = text ? JSON.parse(text) : null; } catch (_) { parsed = text; }
    return { status: res.status, headers: res.headers, body: parsed };
  }

  async publish(user, fields) {
    const res = await this.api('POST', `/api/notifications/${encodeURIComponent(user)}`, { type: 'info', ...fields });
    assert.equal(res.status, 201, `publish answered ${res.status}: ${JSON.stringify(res.body)}`);
    return res.body;
  }

  /** A fresh browser context and page that records uncaught errors in `page.errors`. */
  async newPage({ viewport = { width: 1280, height: 800 } } = {}) {
    const context = await this.browser.newContext({ viewport });
    const page = await context.newPage();
    page.errors = [];
    page.on('pageerror', (err) => page.errors.push(String(err)));
    this.pages.add(page);
    return page;
  }

  /** The notification page for `user` (anonymous mode), by default once it shows live. */
  async openPage(user, { viewport, waitLive = true } = {}) {
    const page = await this.newPage({ viewport });
    await page.goto(`${this.server.url}/?user=${encodeURIComponent(user)}`, { timeout: WAIT });
    if (waitLive) await waitForState(page, 'live');
    return page;
  }

  /** Closes a page, failing the test if it threw anything uncaught. */
  async closePage(page) {
    this.pages.delete(page);
    assert.deepEqual(page.errors, [], 'the page threw');
    await page.context().close();
  }
}

// ---- waits and reads on the notification page ----------------------------------------------

export function waitForState(page, state, timeout = WAIT) {
  return page.waitForSelector(`#conn-state[data-state="${state}"]`, { timeout });
}

/** Waits until #list holds exactly `n` items. */
export function waitForCount(page, n, timeout = WAIT) {
  return page.waitForFunction(
    (want) => document.querySelectorAll('#list li[data-id]').length === want, n, { timeout });
}

export function waitForBadge(page, text, timeout = WAIT) {
  return page.waitForFunction(
    (want) => document.querySelector('#unread-count').textContent.trim() === want, text, { timeout });
}

/** Every item of #list, top to bottom. */
export function listItems(page) {
  return page.$$eval('#list li[data-id]', (lis) => lis.map((li) => ({
    id: li.dataset.id,
    title: li.querySelector('.title').textContent,
    message: li.querySelector('.message').textContent,
    unread: li.classList.contains('unread'),
  })));
}

export async function badge(page) {
  return (await page.textContent('#unread-count')).trim();
}

// ---- driving herald.js in a page -------------------------------------------------------------

/** A blank document on the server's origin, so that `/herald.js` resolves against it. */
export async function blankPage(h) {
  const page = await h.newPage();
  await page.route(`${h.url}/__blank`, (route) => route.fulfill({ contentType: 'text/html', body: '<!doctype html><title>client</title>' }));
  await page.goto(`${h.url}/__blank`, { timeout: WAIT });
  return page;
}

/**
 * Starts `subscribe(options)` from `/herald.js` in the page, recording what it reports in
 * `window.rec` (under `name`, default `rec`, and the subscription as `window.sub` or
 * `window[name + 'Sub']`); `onReauth` records the reauth and hands back `window.freshToken`.
 * The lifecycle callbacks record `[callback, payload, event id]` in `rec.lifecycle`.
 */
export async function startClient(page, options, name = 'rec') {
  await page.evaluate(async ([opts, key]) => {
    const { subscribe } = await import('/herald.js');
    const rec = window[key] = { events: [], states: [], resyncs: [], reauths: [], errors: [], lifecycle: [] };
    window[key === 'rec' ? 'sub' : key + 'Sub'] = subscribe({
      ...opts,
      onEvent: (e) => rec.events.push({ type: e.type, id: e.id, data: e.data }),
      onUpdate: (n, e) => rec.lifecycle.push(['onUpdate', n, e.id]),
      onDelete: (d, e) => rec.lifecycle.push(['onDelete', d, e.id]),
      onArchive: (a, e) => rec.lifecycle.push(['onArchive', a, e.id]),
      onResync: (r, e) => rec.resyncs.push({ data: r, id: e.id }),
      onReauth: (r) => { rec.reauths.push(r); return window.freshToken; },
      onStateChange: (state, info) => rec.states.push({
        state, attempt: info.attempt ?? null, delayMs: info.delayMs ?? null, status: info.status ?? null,
        reason: info.reason ?? null, at: performance.now(),
      }),
      onError: (err) => rec.errors.push({ name: err.name, message: err.message, status: err.status }),
    });
  }, [options, name]);
}

/** The notifications the page's subscription delivered: event id and title. */
export function notificationsSeen(page) {
  return page.evaluate(() => window.rec.events.filter((e) => e.type === 'notification').map((e) => ({ id: e.id, title: e.data.title })));
}

export function waitForNotifications(page, n, timeout = WAIT) {
  return page.waitForFunction((want) => window.rec.events.filter((e) => e.type === 'notification').length >= want, n, { timeout });
}

export function waitForClientState(page, state, count = 1, timeout = WAIT) {
  return page.waitForFunction(([s, c]) => window.rec.states.filter((x) => x.state === s).length >= c, [state, count], { timeout });
}
