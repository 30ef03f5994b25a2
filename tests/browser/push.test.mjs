// Web Push, the browser side (docs/protocol.md#web-push), in Chromium against the real binary:
// /herald-sw.js shows a pushed notification (delivered through the DevTools protocol, as no push
// service is reachable from here) and answers a click on it; the page's switch reports why push
// could not be turned on; and an open but hidden page shows new notifications itself.
//
// Every test that shows a notification runs on device.mjs: a Chromium on a private D-Bus with a
// stand-in desktop notification server, which sees what the browser shows and clicks it as a
// person would. What the desktop sees is also the signal that a notification is on display, the
// only time the worker's registration may be read (see shownNotifications).
// enablePush() end to end uses the fake push service of the Rust tests
// (tests/push_service/fake_push.py, on the venv scripts/test makes): the page's PushManager
// hands out its subscriptions, standing in for the browser's own push service, which cannot be
// reached from here.
// Run: `node --test tests/browser/` (after `cargo build`).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Harness, WAIT, STARTUP_TIMEOUT, heraldBin, repoRoot, freshUser, blankPage, waitForCount, sleep } from './harness.mjs';
import { startDevice } from './device.mjs';

let keyDir = null;
let h = null;      // push on: --vapid-key
let off = null;    // push off: no --vapid-key
let device = null; // a Chromium on a desktop whose notifications the tests can see and click
let pushService = null; // the fake push service: { url, proc }
const VAPID_SUBJECT = 'mailto:push-tests@example.com';
const PUSH_PYTHON = process.env.HERALD_PUSH_PYTHON || path.join(repoRoot, 'target', 'push-venv', 'bin', 'python');

/** `herald vapid-key --out FILE`: the key that turns push on. */
function makeVapidKey(file) {
  return new Promise((resolve, reject) => {
    execFile(heraldBin, ['vapid-key', '--out', file], { timeout: WAIT }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`herald vapid-key failed: ${err.message}\n${stderr}`));
      resolve(stdout.trim());
    });
  });
}

before(async () => {
  keyDir = await mkdtemp(path.join(tmpdir(), 'herald-vapid-'));
  const keyFile = path.join(keyDir, 'vapid.pem');
  const publicKey = await makeVapidKey(keyFile);
  // --push-insecure-endpoints: the fake push service is plain http on loopback.
  h = new Harness({ args: ['--vapid-key', keyFile, '--vapid-subject', VAPID_SUBJECT, '--push-insecure-endpoints'] });
  off = new Harness();
  await Promise.all([h.setup(), off.setup()]);
  device = await startDevice();
  await device.context.grantPermissions(['notifications'], { origin: h.url });
  pushService = await startPushService(publicKey);
});

after(async () => {
  if (pushService) await stopPushService(pushService);
  if (device) await device.close();
  if (h) await h.teardown();
  if (off) await off.teardown();
  if (keyDir) await rm(keyDir, { recursive: true, force: true });
});

// ---- helpers --------------------------------------------------------------------------------

/** The fake push service on loopback; it exits when its stdin closes. */
async function startPushService(publicKey) {
  assert.ok(existsSync(PUSH_PYTHON), `no Python for the fake push service at ${PUSH_PYTHON}: run scripts/test once (it makes target/push-venv) or set HERALD_PUSH_PYTHON`);
  const proc = spawn(PUSH_PYTHON, [path.join(repoRoot, 'tests', 'push_service', 'fake_push.py'),
    '--port', '0', '--vapid-public-key', publicKey, '--subject', VAPID_SUBJECT], { stdio: ['pipe', 'pipe', 'inherit'] });
  const url = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`the fake push service did not start within ${STARTUP_TIMEOUT} ms: ${out}`)), STARTUP_TIMEOUT);
    proc.stdout.setEncoding('utf8');
    proc.stdout.on('data', (chunk) => {
      out += chunk;
      const m = out.match(/^listening (http:\/\/\S+)$/m);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`the fake push service exited (${code}): ${out}`)); });
  });
  proc.stdout.resume();
  return { url, proc };
}

function stopPushService(service) {
  return new Promise((resolve) => {
    if (service.proc.exitCode !== null || service.proc.signalCode !== null) return resolve();
    const timer = setTimeout(() => service.proc.kill('SIGKILL'), 10_000);
    service.proc.once('exit', () => { clearTimeout(timer); resolve(); });
    service.proc.stdin.end();
  });
}

async function pushServiceCall(method, urlPath, body) {
  const res = await fetch(pushService.url + urlPath, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(WAIT + 5_000),
  });
  assert.ok(res.ok, `fake push service ${method} ${urlPath}: ${res.status}`);
  return res.json();
}

/**
 * Makes the page's PushManager hand out the subscriptions in `window.nextSubscriptions` (from
 * the fake push service) in place of the browser's push service, and record each subscribe()
 * in `window.subscribeCalls`. Only the subscription's source is replaced: the page's code,
 * herald.js and the service worker run as they are.
 */
async function standInForThePushService(page) {
  await page.evaluate(() => {
    window.nextSubscriptions = [];
    window.subscribeCalls = [];
    let current = null;
    const make = (json, options) => ({
      endpoint: json.endpoint,
      expirationTime: null,
      options: { userVisibleOnly: options.userVisibleOnly, applicationServerKey: new Uint8Array(options.applicationServerKey).buffer },
      toJSON: () => ({ endpoint: json.endpoint, expirationTime: null, keys: json.keys }),
      unsubscribe: async () => { if (current && current.endpoint === json.endpoint) current = null; return true; },
    });
    PushManager.prototype.subscribe = async function subscribe(options) {
      window.subscribeCalls.push({ userVisibleOnly: options.userVisibleOnly, key: Array.from(new Uint8Array(options.applicationServerKey)) });
      const json = window.nextSubscriptions.shift();
      if (!json) throw new DOMException('no subscription left in the test', 'AbortError');
      current = make(json, options);
      return current;
    };
    PushManager.prototype.getSubscription = async function getSubscription() { return current; };
  });
}

function base64urlBytes(text) {
  return Array.from(Buffer.from(text, 'base64url'));
}

/** Registers /herald-sw.js from `page` and resolves with its scope once a worker is active. */
function registerWorker(page) {
  return page.evaluate(async (timeout) => {
    const registration = await navigator.serviceWorker.register('/herald-sw.js');
    const ready = navigator.serviceWorker.ready;
    const late = new Promise((_, reject) => setTimeout(() => reject(new Error(`no active service worker within ${timeout} ms`)), timeout));
    await Promise.race([ready, late]);
    return registration.scope;
  }, WAIT);
}

/**
 * A DevTools session on `page` that knows the id of the registration at `scope` (the
 * ServiceWorker domain reports registrations by event only) and delivers pushes to it, as the
 * browser does with a message from its push service.
 */
async function pushChannel(page, scope) {
  const cdp = await page.context().newCDPSession(page);
  const found = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no service worker registration for ${scope} within ${WAIT} ms`)), WAIT);
    cdp.on('ServiceWorker.workerRegistrationUpdated', ({ registrations }) => {
      const r = registrations.find((x) => x.scopeURL === scope && !x.isDeleted);
      if (r) { clearTimeout(timer); resolve(r.registrationId); }
    });
  });
  await cdp.send('ServiceWorker.enable');
  const registrationId = await found;
  const origin = new URL(scope).origin;
  return {
    push: (payload) => cdp.send('ServiceWorker.deliverPushMessage', { origin, registrationId, data: payload }),
    detach: () => cdp.detach(),
  };
}

/**
 * Evaluates `fn(arg)` in the page (awaiting it) until it returns something truthy, and resolves
 * with that. (Playwright's waitForFunction takes a promise for a truthy answer, so it cannot wait
 * on an async check such as getNotifications(). Polled from here, it also works while the page
 * is hidden and its timers are slowed.)
 */
async function pollPage(page, fn, arg, what, timeout = WAIT) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await page.evaluate(fn, arg);
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeout} ms`);
    await sleep(50);
  }
}

/**
 * Waits until the desktop shows a notification titled `title` (one shown after the first `since`
 * of `device.notifications.shown`), then reads the notifications of the page's registration,
 * those tagged `tag` if one is given.
 *
 * The registration is read only once the desktop has the notification: Chromium's
 * getNotifications() drops from its list every stored notification that is not yet on display,
 * for good, so polling it while a push is being shown loses that notification (a page polling
 * through 40 pushes kept 21 of them).
 */
async function shownNotifications(page, since, title, tag = null) {
  await device.notifications.waitForShown(title, WAIT, since);
  return page.evaluate(async (t) => {
    const registration = await navigator.serviceWorker.getRegistration();
    const list = await registration.getNotifications(t === null ? {} : { tag: t });
    return list.map((n) => ({ title: n.title, body: n.body, tag: n.tag, icon: n.icon, data: n.data }));
  }, tag);
}

function waitForVisibility(page, state) {
  return page.waitForFunction((s) => document.visibilityState === s, state, { timeout: WAIT, polling: 100 });
}

async function openOnDevice(url, { recordNotifications = false } = {}) {
  const page = await device.context.newPage();
  page.errors = [];
  page.on('pageerror', (err) => page.errors.push(String(err)));
  if (recordNotifications) {
    // Records what the page hands the Notifications API, then shows it for real.
    await page.addInitScript(() => {
      const Real = window.Notification;
      window.madeNotifications = [];
      window.Notification = class extends Real {
        constructor(title, options = {}) {
          super(title, options);
          window.madeNotifications.push({ title, body: options.body, tag: options.tag });
        }
      };
    });
  }
  await page.goto(url, { timeout: WAIT });
  return page;
}

async function closeOnDevice(page) {
  assert.deepEqual(page.errors, [], 'the page threw');
  await page.close();
}

/** The service worker's registrations on the device go, so each test starts from none. */
async function unregisterAll(page) {
  await page.evaluate(async () => {
    for (const r of await navigator.serviceWorker.getRegistrations()) await r.unregister();
  });
}

// ---- the service worker ---------------------------------------------------------------------

test('a push shows the notification with its title, message, id as tag, an icon for its type and its link', { timeout: 60_000 }, async () => {
  const user = freshUser('pushed');
  const page = await openOnDevice(`${h.url}/healthz`);
  const scope = await registerWorker(page);
  assert.equal(scope, `${h.url}/`, 'the worker is served from the root, so its scope is the whole site');
  const channel = await pushChannel(page, scope);
  const desktop = device.notifications;

  // The payload is the notification's JSON exactly as the stream carries it.
  const sent = await h.publish(user, { type: 'success', title: 'Deploy finished', message: 'Build 42 is live', link: '/deploys/42' });
  let since = desktop.shown.length;
  await channel.push(JSON.stringify(sent));
  const [shown] = await shownNotifications(page, since, 'Deploy finished', sent.id);
  const successIcon = shown.icon;
  assert.deepEqual({ ...shown, icon: undefined }, {
    title: 'Deploy finished', body: 'Build 42 is live', tag: sent.id, icon: undefined,
    data: { id: sent.id, link: '/deploys/42' },
  });
  assert.match(successIcon, /^data:image\/svg\+xml,/);

  // Another type has another icon; no link is a null link.
  const warning = await h.publish(user, { type: 'warning', title: 'Disk at 91%', message: 'db-2' });
  since = desktop.shown.length;
  await channel.push(JSON.stringify(warning));
  const [warned] = await shownNotifications(page, since, 'Disk at 91%', warning.id);
  assert.equal(warned.body, 'db-2');
  assert.deepEqual(warned.data, { id: warning.id, link: null });
  assert.match(warned.icon, /^data:image\/svg\+xml,/);
  assert.notEqual(warned.icon, successIcon, 'each type has its own icon');

  // The same notification pushed again (a retry) replaces the first: one per tag, never two.
  since = desktop.shown.length;
  await channel.push(JSON.stringify({ ...sent, title: 'Deploy finished (again)' }));
  const again = await shownNotifications(page, since, 'Deploy finished (again)', sent.id);
  assert.deepEqual(again.map((n) => n.title), ['Deploy finished (again)']);

  // A push it cannot read still shows something (the subscription promises a visible one).
  since = desktop.shown.length;
  await channel.push('not json');
  const unreadable = (await shownNotifications(page, since, 'New notification'))
    .filter((n) => n.title === 'New notification')
    .map((n) => ({ body: n.body, tag: n.tag }));
  assert.deepEqual(unreadable, [{ body: '', tag: '' }]);

  await channel.detach();
  await unregisterAll(page);
  await closeOnDevice(page);
});

test('a click on a pushed notification closes it and opens its link when no page of the site is open', { timeout: 90_000 }, async () => {
  const user = freshUser('clicker');
  const cases = [
    // [link in the payload, the window the click must open]
    ['/deploys/42', `${h.url}/deploys/42`],
    [undefined, `${h.url}/`],
    ['javascript:alert(1)', `${h.url}/`], // never opened: only http(s) and paths are links
    ['//elsewhere.example/x', `${h.url}/`], // a path with two slashes is another host
  ];
  for (const [link, opens] of cases) {
    const page = await openOnDevice(`${h.url}/healthz`);
    const scope = await registerWorker(page);
    const channel = await pushChannel(page, scope);
    const title = `Click me ${link}`;
    const sent = await h.publish(user, { title, message: 'to see it' });
    await channel.push(JSON.stringify({ ...sent, link }));
    const notification = await device.notifications.waitForShown(title, WAIT);
    await channel.detach();
    // Leave the site, so that no window of it is open when the notification is clicked.
    await page.goto('about:blank', { timeout: WAIT });

    const opened = device.context.waitForEvent('page', { timeout: WAIT });
    device.notifications.click(notification.id);
    const tab = await opened;
    await tab.waitForLoadState('load', { timeout: WAIT });
    // The address the window was opened at (the page at / then puts ?user= in it).
    const openedAt = await tab.evaluate(() => performance.getEntriesByType('navigation')[0].name);
    assert.equal(openedAt, opens, `a click on a notification with link ${link}`);
    await device.notifications.waitForClosed(notification.id, WAIT);
    await tab.close();
    await closeOnDevice(page);
  }
});

test('a click on a pushed notification brings the open page of the site to the front instead of opening another', { timeout: 60_000 }, async () => {
  const user = freshUser('focus');
  const page = await openOnDevice(`${h.url}/?user=${user}`);
  await page.waitForSelector('#conn-state[data-state="live"]', { timeout: WAIT });
  const scope = await registerWorker(page);
  const channel = await pushChannel(page, scope);
  const other = await device.context.newPage(); // a tab in front: the page is hidden
  await waitForVisibility(page, 'hidden');

  // Published to another user, so that this page's stream does not show it too.
  const sent = await h.publish(`${user}-elsewhere`, { title: 'Back to the page', message: 'please', link: '/deploys/7' });
  await channel.push(JSON.stringify(sent));
  const notification = await device.notifications.waitForShown('Back to the page', WAIT);
  const tabs = device.context.pages().length;
  device.notifications.click(notification.id);
  await waitForVisibility(page, 'visible');
  await device.notifications.waitForClosed(notification.id, WAIT);
  assert.equal(device.context.pages().length, tabs, 'no window was opened');
  assert.equal(page.url(), `${h.url}/?user=${user}`, 'the page stayed where it was');

  await channel.detach();
  await other.close();
  await unregisterAll(page);
  await closeOnDevice(page);
});

// ---- enablePush, end to end ----------------------------------------------------------------

test('enablePush stores the subscription on the server; herald then pushes there, and the worker shows what arrives; disablePush removes it', { timeout: 90_000 }, async () => {
  const user = freshUser('e2e');
  const { publicKey } = (await h.api('GET', '/api/push/public-key')).body;
  const first = await pushServiceCall('POST', '/subscriptions');
  // A page with no stream of the user's open, so that herald pushes (--push-when offline).
  const page = await openOnDevice(`${h.url}/healthz`);
  await standInForThePushService(page);
  await page.evaluate((sub) => { window.nextSubscriptions.push(sub); }, first);

  const enable = (u) => page.evaluate(async (who) => {
    const { enablePush } = await import('/herald.js');
    return enablePush({ user: who });
  }, u);
  const id = await enable(user);
  assert.deepEqual(await page.evaluate(() => window.subscribeCalls), [{ userVisibleOnly: true, key: base64urlBytes(publicKey) }],
    'subscribed once, visible only, with the server\'s key');
  const listed = await h.api('GET', `/api/push/${user}/subscriptions`);
  assert.equal(listed.status, 200);
  assert.deepEqual(listed.body.subscriptions.map((s) => ({ id: s.id, origin: s.origin })), [{ id, origin: pushService.url }]);
  assert.deepEqual(await page.evaluate(async () => (await import('/herald.js')).pushStatus()), { user, server: h.url, id });
  assert.equal(await enable(user), id, 'enabling again keeps the same subscription');
  assert.equal((await page.evaluate(() => window.subscribeCalls)).length, 1);

  // herald pushes a notification to the endpoint; the worker shows what the push service got.
  const sent = await h.publish(user, { type: 'error', title: 'Payment failed', message: 'card declined', link: '/billing' });
  const records = await pushServiceCall('GET', `/received?after=0&wait=${WAIT / 1000}`);
  const record = records.find((r) => r.subscription === first.id && r.payload && r.payload.id === sent.id);
  assert.ok(record, `the push service received the notification: ${JSON.stringify(records)}`);
  assert.equal(record.error, null);
  const scope = `${h.url}/`;
  const channel = await pushChannel(page, scope);
  const since = device.notifications.shown.length;
  await channel.push(JSON.stringify(record.payload));
  const shown = await shownNotifications(page, since, 'Payment failed', sent.id);
  assert.deepEqual(shown.map((n) => ({ title: n.title, body: n.body, tag: n.tag, data: n.data })),
    [{ title: 'Payment failed', body: 'card declined', tag: sent.id, data: { id: sent.id, link: '/billing' } }]);
  await channel.detach();

  await page.evaluate(async () => (await import('/herald.js')).disablePush());
  assert.deepEqual((await h.api('GET', `/api/push/${user}/subscriptions`)).body, { subscriptions: [] });
  assert.equal(await page.evaluate(async () => (await import('/herald.js')).pushStatus()), null);
  assert.equal(await page.evaluate(async () => (await navigator.serviceWorker.getRegistration()).pushManager.getSubscription()), null,
    'the browser is unsubscribed');
  await unregisterAll(page);
  await closeOnDevice(page);
});

test('when the browser replaces the subscription, the worker stores the new one and deletes the old one', { timeout: 60_000 }, async () => {
  const user = freshUser('renew');
  const [first, second] = [await pushServiceCall('POST', '/subscriptions'), await pushServiceCall('POST', '/subscriptions')];
  const page = await blankPage(h);
  await page.context().grantPermissions(['notifications'], { origin: h.url });
  await standInForThePushService(page);
  await page.evaluate((sub) => { window.nextSubscriptions.push(sub); }, first);
  const oldId = await page.evaluate(async (who) => (await import('/herald.js')).enablePush({ user: who }), user);

  // The worker renews through its own PushManager: it hands out the second subscription. The
  // event is dispatched from the test (a browser fires it only when its push service says so),
  // to the worker's real listener.
  const [worker] = page.context().serviceWorkers().filter((w) => w.url() === `${h.url}/herald-sw.js`);
  assert.ok(worker, 'the service worker runs');
  await worker.evaluate((sub) => {
    let current = null;
    PushManager.prototype.subscribe = async function subscribe(options) {
      current = {
        endpoint: sub.endpoint,
        options: { userVisibleOnly: options.userVisibleOnly, applicationServerKey: options.applicationServerKey },
        toJSON: () => ({ endpoint: sub.endpoint, expirationTime: null, keys: sub.keys }),
      };
      return current;
    };
    // waitUntil() refuses an event the browser did not fire; the listener has started the renewal by then.
    self.dispatchEvent(new ExtendableEvent('pushsubscriptionchange'));
  }, second);

  // The old one goes and the new one comes: one subscription, another id.
  const listed = await pollPage(page, async ([who, oldOne]) => {
    const res = await fetch(`/api/push/${encodeURIComponent(who)}/subscriptions`, { cache: 'no-store' });
    const { subscriptions } = await res.json();
    return subscriptions.length === 1 && subscriptions[0].id !== oldOne ? subscriptions : null;
  }, [user, oldId], 'the renewed subscription alone on the server');
  assert.equal(listed[0].origin, pushService.url);
  const saved = await page.evaluate(() => new Promise((resolve, reject) => {
    const open = indexedDB.open('herald-push');
    open.onsuccess = () => {
      const get = open.result.transaction('state').objectStore('state').get('subscription');
      get.onsuccess = () => { resolve(get.result); open.result.close(); };
      get.onerror = () => reject(get.error);
    };
    open.onerror = () => reject(open.error);
  }));
  assert.deepEqual({ user: saved.user, endpoint: saved.endpoint, id: saved.id }, { user, endpoint: second.endpoint, id: listed[0].id });

  await page.evaluate(async () => { for (const r of await navigator.serviceWorker.getRegistrations()) await r.unregister(); });
  await h.api('DELETE', `/api/push/${user}/subscriptions/${listed[0].id}`);
  await h.closePage(page);
});

// ---- an open page that is hidden ------------------------------------------------------------

test('a hidden page shows a new notification through the service worker; a visible one does not', { timeout: 60_000 }, async () => {
  const user = freshUser('hidden');
  const page = await openOnDevice(`${h.url}/?user=${user}`);
  await page.waitForSelector('#conn-state[data-state="live"]', { timeout: WAIT });
  await registerWorker(page);

  const seen = await h.publish(user, { title: 'Seen on the page', message: 'no need to notify' });
  await waitForCount(page, 1);

  const other = await device.context.newPage();
  await waitForVisibility(page, 'hidden');
  const since = device.notifications.shown.length;
  const sent = await h.publish(user, { type: 'error', title: 'Payment failed', message: 'card declined', link: '/billing' });
  const shown = await shownNotifications(page, since, 'Payment failed', sent.id);
  assert.deepEqual(shown.map((n) => ({ title: n.title, body: n.body, tag: n.tag, data: n.data })),
    [{ title: 'Payment failed', body: 'card declined', tag: sent.id, data: { id: sent.id, link: '/billing' } }]);
  // The one that arrived while the page was in front was not shown: what the page hands the
  // worker reaches the desktop in order, and the later one is there.
  assert.deepEqual(device.notifications.shown.filter((n) => n.summary === seen.title), []);

  await other.close();
  await unregisterAll(page);
  await closeOnDevice(page);
});

test('without the service worker, a hidden page shows a new notification through the Notifications API', { timeout: 60_000 }, async () => {
  const user = freshUser('hidden-api');
  const page = await openOnDevice(`${h.url}/?user=${user}`, { recordNotifications: true });
  await page.waitForSelector('#conn-state[data-state="live"]', { timeout: WAIT });
  await unregisterAll(page);

  const other = await device.context.newPage();
  await waitForVisibility(page, 'hidden');
  const sent = await h.publish(user, { title: 'Build broke', message: 'main is red' });
  const desktop = await device.notifications.waitForShown('Build broke', WAIT);
  assert.match(desktop.body, /main is red$/, 'the desktop shows the message (after the site, on Linux)');
  assert.deepEqual(await page.evaluate(() => window.madeNotifications),
    [{ title: 'Build broke', body: 'main is red', tag: sent.id }]);

  await other.close();
  await closeOnDevice(page);
});

// ---- the page's switch ----------------------------------------------------------------------

/** Clicks the switch and waits for the page to finish with it (enabled again). */
async function flipSwitch(page) {
  await page.click('#push-switch');
  await page.waitForSelector('#push-switch:not(:disabled)', { timeout: WAIT });
}

test('the switch says when this site\'s notifications are blocked, and stays off', { timeout: 30_000 }, async () => {
  const user = freshUser('blocked');
  const page = await h.openPage(user);
  const cdp = await page.context().newCDPSession(page);
  const { targetInfo } = await cdp.send('Target.getTargetInfo');
  await cdp.send('Browser.setPermission', {
    permission: { name: 'notifications' }, setting: 'denied', origin: h.url, browserContextId: targetInfo.browserContextId,
  });
  await cdp.detach();
  assert.equal(await page.isVisible('#push-row'), true);
  assert.equal((await page.textContent('label[for="push-switch"]')).trim(), 'Notify me on this device');

  await flipSwitch(page);
  await page.waitForFunction(() => document.querySelector('#notice').textContent !== '', null, { timeout: WAIT });
  assert.equal(await page.textContent('#notice'),
    "Could not turn on notifications on this device: notifications are blocked for this site: allow them in the browser's site settings");
  assert.equal(await page.isChecked('#push-switch'), false);
  assert.equal(await page.evaluate(async () => (await navigator.serviceWorker.getRegistrations()).length), 0, 'nothing was registered');
  await h.closePage(page);
});

test('the switch says when push is off on the server, and stays off', { timeout: 30_000 }, async () => {
  const user = freshUser('push-off');
  const page = await off.openPage(user);
  await page.context().grantPermissions(['notifications'], { origin: off.url });
  await flipSwitch(page);
  await page.waitForFunction(() => document.querySelector('#notice').textContent !== '', null, { timeout: WAIT });
  assert.equal(await page.textContent('#notice'), 'Could not turn on notifications on this device: push is off on this server');
  assert.equal(await page.isChecked('#push-switch'), false);
  assert.equal(await page.evaluate(async () => (await navigator.serviceWorker.getRegistrations()).length), 0,
    'the key is asked for before a worker is registered');
  const error = await page.evaluate(async (u) => {
    const { enablePush } = await import('/herald.js');
    try { await enablePush({ user: u }); return null; } catch (err) { return { name: err.name, message: err.message, status: err.status }; }
  }, user);
  assert.deepEqual(error, { name: 'HeraldError', message: 'push is off on this server', status: 404 });
  await off.closePage(page);
});

test('the switch turns push on and off for the user shown', { timeout: 60_000 }, async () => {
  const user = freshUser('switch');
  const subscription = await pushServiceCall('POST', '/subscriptions');
  const page = await h.openPage(user);
  await page.context().grantPermissions(['notifications'], { origin: h.url });
  await standInForThePushService(page);
  await page.evaluate((sub) => { window.nextSubscriptions.push(sub); }, subscription);
  assert.equal(await page.isChecked('#push-switch'), false);

  await flipSwitch(page);
  assert.equal(await page.textContent('#notice'), '');
  assert.equal(await page.isChecked('#push-switch'), true);
  const listed = (await h.api('GET', `/api/push/${user}/subscriptions`)).body.subscriptions;
  assert.deepEqual(listed.map((s) => s.origin), [pushService.url]);

  await flipSwitch(page);
  assert.equal(await page.textContent('#notice'), '');
  assert.equal(await page.isChecked('#push-switch'), false);
  assert.deepEqual((await h.api('GET', `/api/push/${user}/subscriptions`)).body, { subscriptions: [] });
  await unregisterAll(page);
  await h.closePage(page);
});

test('without the Push API the switch is not offered, and enablePush says what is missing', { timeout: 30_000 }, async () => {
  const user = freshUser('no-push');
  const page = await h.newPage();
  await page.addInitScript(() => { delete window.PushManager; });
  await page.goto(`${h.url}/?user=${user}`, { timeout: WAIT });
  await page.waitForSelector('#conn-state[data-state="live"]', { timeout: WAIT });
  assert.equal(await page.isVisible('#push-row'), false);
  const error = await page.evaluate(async (u) => {
    const { enablePush } = await import('/herald.js');
    try { await enablePush({ user: u }); return null; } catch (err) { return { name: err.name, message: err.message }; }
  }, user);
  assert.deepEqual(error, { name: 'HeraldError', message: 'push notifications are not supported here: this browser has no Push API' });
  await h.closePage(page);
});
