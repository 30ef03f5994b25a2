// A desktop for the push tests: a private D-Bus session bus with a stand-in notification server
// (the org.freedesktop.Notifications interface a Linux desktop's notification daemon serves),
// and a Chromium that runs on it. Chromium on Linux shows web notifications through that
// interface, so the stand-in sees each one the browser shows, and can click it the way a
// person would (the `ActionInvoked` signal): the browser then dispatches a real, trusted
// `notificationclick` to the service worker, with the right to focus or open a window.
//
// The browser is started here and attached with Playwright's `connectOverCDP` without its
// default overrides (`noDefaults`): Playwright's own launch emulates focus on every page, which
// keeps every tab visible. Here a tab is hidden the way a person hides it, by bringing another
// tab of the same window to the front.
//
// Needs /usr/bin/dbus-daemon (Debian's dbus-daemon) and the dbus-next package.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import dbus from 'dbus-next';
import { chromium } from 'playwright-core';
import { chromiumPath, STARTUP_TIMEOUT } from './harness.mjs';

const DBUS_DAEMON = process.env.DBUS_DAEMON || '/usr/bin/dbus-daemon';
const CLOSED_BY_CALL = 3; // NotificationClosed reason: closed by a call to CloseNotification

/** Resolves with the first match of `pattern` in `stream`'s text, or rejects after `ms`. */
function readLine(stream, pattern, ms, what) {
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => { stream.off('data', onData); reject(new Error(`${what}: nothing matching ${pattern} within ${ms} ms\n${text}`)); }, ms);
    function onData(chunk) {
      text += chunk;
      const m = text.match(pattern);
      if (m) { clearTimeout(timer); stream.off('data', onData); resolve(m); }
    }
    stream.setEncoding('utf8');
    stream.on('data', onData);
  });
}

/**
 * The notification server: records every `Notify` call (`shown`), every `CloseNotification`
 * (`closed`), and clicks a notification with `click(id)`.
 */
class NotificationServer extends dbus.interface.Interface {
  constructor() {
    super('org.freedesktop.Notifications');
    this.shown = [];
    this.closed = [];
    this.nextId = 1;
    this.waiters = new Set();
  }

  GetCapabilities() { return ['actions', 'body']; }

  GetServerInformation() { return ['herald-tests', 'herald', '1', '1.2']; }

  Notify(appName, replacesId, appIcon, summary, body, actions, hints, expireTimeout) {
    const id = replacesId || this.nextId++;
    this.shown.push({ id, replacesId, summary, body, actions });
    this.wake();
    return id;
  }

  CloseNotification(id) {
    this.closed.push(id);
    this.wake();
    this.NotificationClosed(id, CLOSED_BY_CALL);
  }

  ActionInvoked(id, actionKey) { return [id, actionKey]; }

  NotificationClosed(id, reason) { return [id, reason]; }

  wake() { for (const check of this.waiters) check(); }

  /** Waits until `predicate(this)` returns something truthy, and resolves with it. */
  waitFor(predicate, what, ms) {
    return new Promise((resolve, reject) => {
      const check = () => {
        const found = predicate(this);
        if (found) { this.waiters.delete(check); clearTimeout(timer); resolve(found); }
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`the notification server saw no ${what} within ${ms} ms; shown: ${JSON.stringify(this.shown)}`));
      }, ms);
      this.waiters.add(check);
      check();
    });
  }

  /**
   * The notification the browser showed with this title (the latest, if several), among those
   * shown after the first `since` (a length of `shown` taken earlier).
   */
  waitForShown(summary, ms, since = 0) {
    return this.waitFor((s) => s.shown.slice(since).filter((n) => n.summary === summary).pop(), `notification titled ${JSON.stringify(summary)}`, ms);
  }

  waitForClosed(id, ms) {
    return this.waitFor((s) => s.closed.includes(id), `CloseNotification(${id})`, ms);
  }

  /** A person clicks the notification's body: its default action. */
  click(id) {
    const shown = this.shown.find((n) => n.id === id);
    assert.ok(shown, `no notification ${id} to click`);
    assert.ok(shown.actions.includes('default'), `notification ${id} has no default action to click: ${JSON.stringify(shown.actions)}`);
    this.ActionInvoked(id, 'default');
  }
}

NotificationServer.configureMembers({
  methods: {
    GetCapabilities: { inSignature: '', outSignature: 'as' },
    GetServerInformation: { inSignature: '', outSignature: 'ssss' },
    Notify: { inSignature: 'susssasa{sv}i', outSignature: 'u' },
    CloseNotification: { inSignature: 'u', outSignature: '' },
  },
  signals: {
    ActionInvoked: { signature: 'us' },
    NotificationClosed: { signature: 'uu' },
  },
});

/**
 * Starts the bus, the notification server and a Chromium on them. `close()` ends all three
 * (each process by its own PID) and removes their files.
 */
export async function startDevice() {
  assert.ok(existsSync(DBUS_DAEMON), `no dbus-daemon at ${DBUS_DAEMON}: install Debian's dbus-daemon or set DBUS_DAEMON`);
  const dir = await mkdtemp(path.join(tmpdir(), 'herald-device-'));
  const device = { dir, busProc: null, bus: null, chromeProc: null, browser: null, context: null, notifications: null };
  try {
    device.busProc = spawn(DBUS_DAEMON, [
      '--session', '--nofork', '--nopidfile', '--print-address=1', `--address=unix:path=${path.join(dir, 'bus')}`,
    ], { stdio: ['ignore', 'pipe', 'inherit'] });
    const [, address] = await readLine(device.busProc.stdout, /^(unix:\S+)$/m, STARTUP_TIMEOUT, 'dbus-daemon');

    device.bus = dbus.sessionBus({ busAddress: address });
    device.notifications = new NotificationServer();
    device.bus.export('/org/freedesktop/Notifications', device.notifications);
    // Owned before the browser starts: Chromium looks for a notification server once, at start.
    await device.bus.requestName('org.freedesktop.Notifications', dbus.NameFlag.DO_NOT_QUEUE);

    const env = { ...process.env, DBUS_SESSION_BUS_ADDRESS: address };
    device.chromeProc = spawn(chromiumPath, [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--remote-debugging-port=0', `--user-data-dir=${path.join(dir, 'profile')}`,
      'about:blank',
    ], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    const [, endpoint] = await readLine(device.chromeProc.stderr, /DevTools listening on (ws:\/\/\S+)/, STARTUP_TIMEOUT, 'chromium');
    device.chromeProc.stderr.resume(); // keep draining it

    device.browser = await chromium.connectOverCDP(endpoint, { noDefaults: true, timeout: STARTUP_TIMEOUT });
    [device.context] = device.browser.contexts();
  } catch (err) {
    await closeDevice(device);
    throw err;
  }
  device.close = () => closeDevice(device);
  return device;
}

function stopProcess(proc) {
  return new Promise((resolve) => {
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return resolve();
    const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
    proc.once('exit', () => { clearTimeout(timer); resolve(); });
    proc.kill('SIGTERM');
  });
}

async function closeDevice(device) {
  if (device.browser) await device.browser.close().catch(() => {});
  await stopProcess(device.chromeProc);
  if (device.bus) device.bus.disconnect();
  await stopProcess(device.busProc);
  // Chromium's helper processes (crashpad) may still be writing into the profile as the
  // browser exits: retried, as rm's ENOTEMPTY then passes.
  await rm(device.dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
}
