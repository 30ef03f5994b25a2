// Drives the page at `/` in headless Chromium against the real herald binary: live delivery,
// text-only rendering, read state across tabs, history + stream without gaps or duplicates,
// categories, updates in place, deletes and expiry, archive and dismiss, paging back through
// history, keyboard use, and recovery after a server restart.
// Run: `node --test tests/browser/` (after `cargo build`).
//
// HERALD_SCREENSHOTS=1 also writes docs/screenshots/page-{desktop,phone}.png.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import {
  Harness, WAIT, RECONNECT_WAIT, repoRoot, sleep, freshUser,
  waitForState, waitForCount, waitForBadge, listItems, badge,
} from './harness.mjs';

const h = new Harness();
before(() => h.setup());
after(() => h.teardown());

// ---- behaviours ---------------------------------------------------------------------------

test('the connection indicator shows live once connected', { timeout: 30_000 }, async () => {
  const user = freshUser('live');
  const page = await h.openPage(user, { waitLive: false });
  await waitForState(page, 'live');
  assert.equal(await page.getAttribute('#conn-state', 'data-state'), 'live');
  assert.equal((await page.textContent('#conn-state')).trim(), 'Live');
  assert.equal(await page.inputValue('#user'), user);
  assert.equal(await badge(page), '0');
  assert.equal((await listItems(page)).length, 0);
  await h.closePage(page);
});

test('a notification published over HTTP appears live and counts as unread', { timeout: 30_000 }, async () => {
  const user = freshUser('alice');
  const page = await h.openPage(user);
  const sent = await h.publish(user, { title: 'Deploy finished', message: 'Build 42 is live', type: 'success', link: '/deploys/42' });
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
  await h.closePage(page);
});

test('notification text is shown as text, never as HTML', { timeout: 30_000 }, async () => {
  const user = freshUser('mallory');
  const title = '<img src=x onerror="window.__pwned=1">';
  const message = '<b>bold</b>';
  const page = await h.openPage(user);
  const sent = await h.publish(user, { title, message, type: 'error' });
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
  await h.closePage(page);
});

test('marking read in one tab clears the badge in another tab of the same user', { timeout: 40_000 }, async () => {
  const user = freshUser('carol');
  const first = await h.publish(user, { title: 'Invoice paid', message: 'INV-1001', type: 'success' });
  const pageA = await h.openPage(user);
  const pageB = await h.openPage(user);
  for (const p of [pageA, pageB]) {
    await waitForCount(p, 1);
    await waitForBadge(p, '1');
  }

  await pageA.click(`#list li[data-id="${first.id}"] .mark-read`);
  await waitForBadge(pageA, '0');
  await waitForBadge(pageB, '0');
  await pageB.waitForSelector(`#list li[data-id="${first.id}"]:not(.unread)`, { timeout: WAIT });
  assert.equal(await pageA.isVisible(`#list li[data-id="${first.id}"] .mark-read`), false);

  const stored = await h.api('GET', `/api/notifications/${user}`);
  assert.equal(stored.status, 200);
  assert.equal(stored.body.unread, 0);
  assert.equal(stored.body.notifications[0].read, true);

  // Mark-all from the other tab, by keyboard.
  await h.publish(user, { title: 'Disk at 91%', message: 'db-2 /var', type: 'warning' });
  await h.publish(user, { title: 'Backup failed', message: 'nightly job', type: 'error' });
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

  await h.closePage(pageA);
  await h.closePage(pageB);
});

test('history and stream together show every notification exactly once', { timeout: 40_000 }, async () => {
  const user = freshUser('dave');
  const older = [];
  let sinceTwo = null;
  for (const title of ['one', 'two', 'three']) {
    if (title === 'three') {
      const history = await h.api('GET', `/api/notifications/${user}`);
      assert.equal(history.status, 200);
      sinceTwo = history.body.lastEventId;
    }
    older.push(await h.publish(user, { title, message: `message ${title}` }));
    await sleep(5); // distinct timestamps, so newest-first order is well defined
  }
  assert.ok(sinceTwo !== null && sinceTwo !== undefined, 'history reports a lastEventId once events exist');

  const page = await h.newPage();

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
    between = await h.publish(user, { title: 'between', message: 'published after the history read' });
    await route.fulfill({ status: 200, json: { ...history, lastEventId: sinceTwo } });
  });
  await page.goto(`${h.url}/?user=${encodeURIComponent(user)}`, { timeout: WAIT });
  await waitForState(page, 'live');
  await waitForCount(page, 4);
  assert.ok(between, 'the history request was intercepted');
  await waitForBadge(page, '4');

  const after = await h.publish(user, { title: 'four', message: 'published while live' });
  await waitForCount(page, 5);
  await sleep(500); // a late duplicate would show up by now
  const items = await listItems(page);
  assert.deepEqual(items.map((i) => i.title), ['four', 'between', 'three', 'two', 'one']);
  assert.deepEqual(items.map((i) => i.id), [after.id, between.id, ...older.map((n) => n.id).reverse()]);
  assert.equal(await badge(page), '5');
  await h.closePage(page);
});

test('a resync from the stream makes the page reload its history', { timeout: 40_000 }, async () => {
  const user = freshUser('grace');
  const sent = [];
  for (const title of ['first', 'second']) {
    sent.push(await h.publish(user, { title, message: `message ${title}` }));
    await sleep(5);
  }
  const page = await h.newPage();
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
  await page.goto(`${h.url}/?user=${encodeURIComponent(user)}`, { timeout: WAIT });
  await waitForState(page, 'live');
  await waitForCount(page, 2);
  await waitForBadge(page, '2');
  assert.equal(historyReads, 2);
  const later = await h.publish(user, { title: 'third', message: 'live after the resync' });
  await waitForCount(page, 3);
  await sleep(500);
  assert.deepEqual((await listItems(page)).map((i) => i.id), [later.id, sent[1].id, sent[0].id]);
  assert.equal(await badge(page), '3');
  await h.closePage(page);
});

test('a refused stream shows offline, then the page retries by itself', { timeout: 40_000 }, async () => {
  const user = freshUser('frank');
  const page = await h.newPage();
  // The first stream request is refused as a full server refuses it (503 + Retry-After).
  let refused = 0;
  await page.route('**/events/**', (route) => {
    if (refused++ > 0) return route.continue();
    return route.fulfill({ status: 503, contentType: 'application/json', headers: { 'retry-after': '1' }, body: '{"error":"busy"}' });
  });
  await page.goto(`${h.url}/?user=${encodeURIComponent(user)}`, { timeout: WAIT });
  await waitForState(page, 'offline');
  const early = await h.publish(user, { title: 'while refused', message: 'comes from history' });
  await waitForState(page, 'live', RECONNECT_WAIT);
  assert.equal(refused, 2);
  await waitForCount(page, 1);
  const later = await h.publish(user, { title: 'after retry', message: 'comes from the stream' });
  await waitForCount(page, 2);
  assert.deepEqual((await listItems(page)).map((i) => i.id), [later.id, early.id]);
  await waitForBadge(page, '2');
  await h.closePage(page);
});

test('after a server restart the page goes live again and misses nothing', { timeout: 90_000 }, async () => {
  const user = freshUser('erin');
  const page = await h.openPage(user);
  const first = await h.publish(user, { title: 'before restart', message: 'one' });
  await waitForCount(page, 1);

  const stopped = await h.stop();
  assert.deepEqual(stopped, { code: 0, signal: null }, 'SIGTERM ends the server with exit code 0');
  await page.waitForFunction(
    () => ['reconnecting', 'offline'].includes(document.querySelector('#conn-state').dataset.state),
    null, { timeout: WAIT });

  await h.start();
  // Published before the page is back: it reaches the page through replay.
  const whileAway = await h.publish(user, { title: 'while away', message: 'two' });
  await waitForState(page, 'live', RECONNECT_WAIT);
  const later = await h.publish(user, { title: 'after restart', message: 'three' });
  await waitForCount(page, 3, RECONNECT_WAIT);
  await sleep(500);
  const items = await listItems(page);
  assert.deepEqual(items.map((i) => i.title), ['after restart', 'while away', 'before restart']);
  assert.deepEqual(items.map((i) => i.id), [later.id, whileAway.id, first.id]);
  await waitForBadge(page, '3');
  await h.closePage(page);
});

// ---- the lifecycle: categories, updates, deletes, expiry, archive and dismiss -----------------

const EXPIRY_WAIT = 15_000; // expiry is checked every 2 s; `deleted` follows within a few seconds

/** Every item of #list, top to bottom, with its type, category and buttons. */
function itemDetails(page) {
  return page.$$eval('#list li[data-id]', (lis) => lis.map((li) => ({
    id: li.dataset.id,
    type: li.dataset.type,
    category: li.querySelector('.category')?.textContent ?? null,
    title: li.querySelector('.title').textContent,
    message: li.querySelector('.message').textContent,
    unread: li.classList.contains('unread'),
    edited: li.querySelector('.edited') !== null,
    buttons: [...li.querySelectorAll('.actions button')].filter((b) => !b.hidden).map((b) => b.className),
  })));
}

/** Publishes one notification per title, oldest first, with distinct timestamps; returns them. */
async function publishEach(user, titles, fields = {}) {
  const sent = [];
  for (const title of titles) {
    sent.push(await h.publish(user, { title, message: `message ${title}`, ...fields[title] }));
    await sleep(5);
  }
  return sent;
}

/** Clicks `selector` and resolves the response to the request it makes to `method`. */
async function clickAndAwait(page, selector, method) {
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === method && new URL(r.url()).pathname.startsWith('/api/notifications/'), { timeout: WAIT }),
    page.click(selector),
  ]);
  return response;
}

const UNREAD_BUTTONS = ['mark-read', 'archive', 'dismiss'];

test('each item shows its category, and an update is applied in place as text', { timeout: 40_000 }, async () => {
  const user = freshUser('patch');
  const [one, two, three] = await publishEach(user, ['one', 'two', 'three'], { two: { category: 'billing', type: 'info' } });
  const page = await h.openPage(user);
  await waitForCount(page, 3);
  const base = { type: 'info', category: null, unread: true, edited: false, buttons: UNREAD_BUTTONS };
  assert.deepEqual(await itemDetails(page), [
    { ...base, id: three.id, title: 'three', message: 'message three' },
    { ...base, id: two.id, category: 'billing', title: 'two', message: 'message two' },
    { ...base, id: one.id, title: 'one', message: 'message one' },
  ]);
  await page.click(`#list li[data-id="${one.id}"] .mark-read`);
  await waitForBadge(page, '2');

  const title = '<img src=x onerror="window.__pwned=1"> overdue';
  const patched = await h.api('PATCH', `/api/notifications/${user}/${two.id}`, { title, message: '<b>pay now</b>', type: 'error', category: 'billing.late' });
  assert.equal(patched.status, 200, JSON.stringify(patched.body));
  await page.waitForFunction((id) => document.querySelector(`#list li[data-id="${id}"]`)?.dataset.type === 'error', two.id, { timeout: WAIT });
  const readOne = { ...base, id: one.id, title: 'one', message: 'message one', unread: false, buttons: ['archive', 'dismiss'] };
  assert.deepEqual(await itemDetails(page), [
    { ...base, id: three.id, title: 'three', message: 'message three' },
    { ...base, id: two.id, type: 'error', category: 'billing.late', title, message: '<b>pay now</b>', edited: true },
    readOne,
  ]);
  assert.equal(await page.$$eval('#list img, #list b', (els) => els.length), 0, 'no markup from notification text');
  assert.equal(await badge(page), '2');

  // An update to a read one keeps it read; `null` removes the category.
  assert.equal((await h.api('PATCH', `/api/notifications/${user}/${one.id}`, { message: 'one, reworded' })).status, 200);
  assert.equal((await h.api('PATCH', `/api/notifications/${user}/${two.id}`, { category: null })).status, 200);
  await page.waitForFunction((id) => document.querySelector(`#list li[data-id="${id}"] .category`) === null, two.id, { timeout: WAIT });
  await page.waitForFunction((id) => document.querySelector(`#list li[data-id="${id}"] .message`)?.textContent === 'one, reworded', one.id, { timeout: WAIT });
  const items = await itemDetails(page);
  assert.deepEqual(items.map((i) => [i.id, i.category, i.unread, i.edited]),
    [[three.id, null, true, false], [two.id, null, true, true], [one.id, null, false, true]]);
  assert.equal(await badge(page), '2');
  assert.equal(await page.evaluate(() => typeof window.__pwned), 'undefined');

  // History agrees after a reload.
  await page.reload({ timeout: WAIT });
  await waitForState(page, 'live');
  await waitForCount(page, 3);
  assert.deepEqual(await itemDetails(page), items);
  await waitForBadge(page, '2');
  await h.closePage(page);
});

test('an item that expires says when, and one that does not says nothing of it', { timeout: 40_000 }, async () => {
  const user = freshUser('expires');
  const [lasting, hourly] = await publishEach(user, ['lasting', 'hourly'], { hourly: { ttl: 3600 } });
  assert.equal(typeof hourly.expiresAt, 'string', JSON.stringify(hourly));
  assert.equal(lasting.expiresAt, undefined, JSON.stringify(lasting));
  const page = await h.openPage(user);
  await waitForCount(page, 2);
  const shown = await page.$$eval('#list li[data-id]', (lis) => lis.map((li) => {
    const expires = li.querySelector('.expires');
    return [li.dataset.id, expires?.textContent ?? null, expires?.dateTime ?? null];
  }));
  assert.deepEqual(shown, [
    [hourly.id, 'expires in 1 hour', new Date(hourly.expiresAt).toISOString()],
    [lasting.id, null, null],
  ]);
  await h.closePage(page);
});

test('a notification deleted by its publisher leaves the list, and the badge counts it only if unread', { timeout: 40_000 }, async () => {
  const user = freshUser('retract');
  const [one, two, three] = await publishEach(user, ['one', 'two', 'three']);
  const page = await h.openPage(user);
  await waitForCount(page, 3);
  await waitForBadge(page, '3');
  await page.click(`#list li[data-id="${one.id}"] .mark-read`);
  await waitForBadge(page, '2');

  assert.equal((await h.api('DELETE', `/api/notifications/${user}/${two.id}`)).status, 204);
  await waitForCount(page, 2);
  await waitForBadge(page, '1');
  assert.equal((await h.api('DELETE', `/api/notifications/${user}/${one.id}`)).status, 204);
  await waitForCount(page, 1);
  await sleep(300); // a wrong badge change would show up by now
  assert.deepEqual(await listItems(page), [{ id: three.id, title: 'three', message: 'message three', unread: true }]);
  assert.equal(await badge(page), '1');
  await h.closePage(page);
});

test('an expired notification leaves the list by itself, and stays gone after a reload', { timeout: 40_000 }, async () => {
  const user = freshUser('expiry');
  const page = await h.openPage(user);
  const [kept] = await publishEach(user, ['kept']);
  const expiring = await h.publish(user, { title: 'flash sale', message: 'one second only', ttl: 1 });
  assert.equal(typeof expiring.expiresAt, 'string');
  await page.waitForSelector(`#list li[data-id="${expiring.id}"]`, { timeout: WAIT });
  await page.waitForSelector(`#list li[data-id="${expiring.id}"]`, { state: 'detached', timeout: EXPIRY_WAIT });
  await waitForBadge(page, '1');
  assert.deepEqual(await listItems(page), [{ id: kept.id, title: 'kept', message: 'message kept', unread: true }]);

  await page.reload({ timeout: WAIT });
  await waitForState(page, 'live');
  await waitForCount(page, 1);
  assert.deepEqual(await listItems(page), [{ id: kept.id, title: 'kept', message: 'message kept', unread: true }]);
  assert.equal(await badge(page), '1');
  await h.closePage(page);
});

test('Archive and Dismiss take items off the inbox, other tabs follow, and a reload agrees', { timeout: 60_000 }, async () => {
  const user = freshUser('archive');
  const [a, b, c] = await publishEach(user, ['a', 'b', 'c']);
  const inbox = await h.openPage(user);
  const archive = await h.openPage(user);
  await waitForCount(inbox, 3);
  await waitForCount(archive, 3);
  await archive.click('#view-archived');
  await waitForState(archive, 'live');
  await waitForCount(archive, 0);
  assert.equal((await archive.textContent('#view-name')).trim(), 'Archived');
  assert.equal(await archive.isVisible('#mark-all'), false);
  await waitForBadge(archive, '3'); // the badge counts the inbox in either view

  const archived = await clickAndAwait(inbox, `#list li[data-id="${b.id}"] .archive`, 'POST');
  assert.equal(archived.status(), 200);
  await waitForCount(inbox, 2);
  assert.deepEqual((await listItems(inbox)).map((i) => i.id), [c.id, a.id]);
  assert.equal(await inbox.evaluate(() => document.activeElement.dataset.id), a.id, 'focus moves to the next item');
  await waitForBadge(inbox, '2');
  // The other tab, on its archived view, shows it.
  await waitForCount(archive, 1);
  assert.deepEqual(await itemDetails(archive), [
    { id: b.id, type: 'info', category: null, title: 'b', message: 'message b', unread: true, edited: false, buttons: ['mark-read', 'unarchive', 'dismiss'] },
  ]);
  await waitForBadge(archive, '2');

  const dismissed = await clickAndAwait(inbox, `#list li[data-id="${a.id}"] .dismiss`, 'DELETE');
  assert.equal(dismissed.status(), 204);
  await waitForCount(inbox, 1);
  await waitForBadge(inbox, '1');
  await waitForBadge(archive, '1');
  await sleep(300); // the stream's echo of both changes must not count them again
  assert.equal(await badge(inbox), '1');
  assert.deepEqual((await listItems(inbox)).map((i) => i.id), [c.id]);

  const stored = await h.api('GET', `/api/notifications/${user}`);
  assert.deepEqual([stored.body.notifications.map((n) => n.id), stored.body.unread], [[c.id], 1]);
  const storedArchived = await h.api('GET', `/api/notifications/${user}?archived=true`);
  assert.deepEqual(storedArchived.body.notifications.map((n) => [n.id, n.archived]), [[b.id, true]]);

  await inbox.reload({ timeout: WAIT });
  await waitForState(inbox, 'live');
  await waitForCount(inbox, 1);
  assert.deepEqual((await listItems(inbox)).map((i) => i.id), [c.id]);
  await waitForBadge(inbox, '1');

  // The archived view survives a reload: it is in the address.
  assert.equal(new URL(archive.url()).searchParams.get('view'), 'archived');
  await archive.reload({ timeout: WAIT });
  await waitForState(archive, 'live');
  await waitForCount(archive, 1);
  assert.deepEqual((await listItems(archive)).map((i) => i.id), [b.id]);
  assert.equal((await archive.textContent('#view-name')).trim(), 'Archived');
  assert.equal(await archive.getAttribute('#view-archived', 'aria-pressed'), 'true');
  assert.equal(await archive.isVisible('#mark-all'), false);
  await waitForBadge(archive, '1');

  // Unarchive from the archived view: it leaves that view and is back in the inbox, in order.
  const unarchived = await clickAndAwait(archive, `#list li[data-id="${b.id}"] .unarchive`, 'POST');
  assert.equal(unarchived.status(), 200);
  await waitForCount(archive, 0);
  assert.equal(await archive.isVisible('#empty'), true);
  assert.equal((await archive.textContent('#empty')).trim(), 'No archived notifications.');
  await waitForBadge(archive, '2');
  await waitForCount(inbox, 2);
  assert.deepEqual((await listItems(inbox)).map((i) => i.id), [c.id, b.id]);
  await waitForBadge(inbox, '2');

  await archive.click('#view-inbox');
  await waitForState(archive, 'live');
  await waitForCount(archive, 2);
  assert.deepEqual((await listItems(archive)).map((i) => i.id), [c.id, b.id]);
  assert.equal(new URL(archive.url()).searchParams.get('view'), null);
  await h.closePage(inbox);
  await h.closePage(archive);
});

/** Publishes `n` notifications titled n1..n<n>; returns their ids, newest first. */
async function publishMany(user, n) {
  const ids = [];
  for (let i = 1; i <= n; i++) ids.push((await h.publish(user, { title: `n${i}`, message: `number ${i}` })).id);
  return ids.reverse();
}

/** Records the query string of every history read the page makes for `user`. */
function recordHistoryReads(page, user) {
  const reads = [];
  page.on('request', (r) => {
    const url = new URL(r.url());
    if (r.method() === 'GET' && url.pathname === `/api/notifications/${user}`) reads.push(url.search);
  });
  return reads;
}

test('scrolling to the end pages older history in with before=, each notification once', { timeout: 60_000 }, async () => {
  const user = freshUser('paging');
  const newestFirst = await publishMany(user, 55);
  const page = await h.newPage({ viewport: { width: 390, height: 844 } });
  const reads = recordHistoryReads(page, user);
  await page.goto(`${h.url}/?user=${encodeURIComponent(user)}`, { timeout: WAIT });
  await waitForState(page, 'live');
  await waitForCount(page, 25);
  await waitForBadge(page, '55');
  assert.deepEqual((await listItems(page)).map((i) => i.id), newestFirst.slice(0, 25));
  assert.equal(await page.isVisible('#load-older'), true);
  assert.equal(await page.isVisible('#list-end'), false);

  await page.evaluate(() => window.scrollTo(0, document.body.scrollHeight));
  await waitForCount(page, 50);
  await page.evaluate(() => window.scrollTo(0, document.body.scrollHeight));
  await waitForCount(page, 55);
  await page.waitForSelector('#list-end', { state: 'visible', timeout: WAIT });
  assert.equal(await page.isVisible('#load-older'), false);
  await sleep(300); // a stray extra page would show up by now
  assert.deepEqual((await listItems(page)).map((i) => i.id), newestFirst);
  assert.deepEqual(reads, ['?limit=25', `?limit=25&before=${newestFirst[24]}`, `?limit=25&before=${newestFirst[49]}`]);

  // A live one still goes on top, and the paged-in ones keep their read state working.
  const live = await h.publish(user, { title: 'live', message: 'after paging' });
  await waitForCount(page, 56);
  assert.equal((await listItems(page))[0].id, live.id);
  // The badge changes at once; the server's count only once the request is answered.
  const marked = await clickAndAwait(page, `#list li[data-id="${newestFirst[54]}"] .mark-read`, 'POST');
  assert.equal(marked.status(), 200);
  await waitForBadge(page, '55');
  const stored = await h.api('GET', `/api/notifications/${user}?limit=1&unread=true`);
  assert.equal(stored.body.unread, 55);
  await h.closePage(page);
});

test('without IntersectionObserver the Load older button pages by keyboard', { timeout: 60_000 }, async () => {
  const user = freshUser('older-button');
  const newestFirst = await publishMany(user, 30);
  const page = await h.newPage({ viewport: { width: 1280, height: 800 } });
  await page.addInitScript(() => { delete window.IntersectionObserver; });
  const reads = recordHistoryReads(page, user);
  await page.goto(`${h.url}/?user=${encodeURIComponent(user)}`, { timeout: WAIT });
  await waitForState(page, 'live');
  await waitForCount(page, 25);
  await page.evaluate(() => window.scrollTo(0, document.body.scrollHeight));
  await sleep(500);
  assert.equal((await listItems(page)).length, 25, 'nothing loads by itself without the observer');

  await page.focus('#load-older');
  await page.keyboard.press('Enter');
  await waitForCount(page, 30);
  await page.waitForSelector('#list-end', { state: 'visible', timeout: WAIT });
  assert.equal(await page.isVisible('#load-older'), false);
  assert.deepEqual((await listItems(page)).map((i) => i.id), newestFirst);
  assert.deepEqual(reads, ['?limit=25', `?limit=25&before=${newestFirst[24]}`]);
  await h.closePage(page);
});

test('the list is a live region, types have text labels, and Tab and Enter mark an item read', { timeout: 30_000 }, async () => {
  const user = freshUser('keyboard');
  const page = await h.openPage(user);
  const sent = await h.publish(user, { title: 'Review requested', message: 'PR 7', type: 'warning' });
  await waitForCount(page, 1);
  assert.deepEqual(await page.$eval('#list', (ul) => ({
    live: ul.getAttribute('aria-live'), relevant: ul.getAttribute('aria-relevant'),
  })), { live: 'polite', relevant: 'additions' });
  assert.equal(await page.getAttribute('#conn-state', 'role'), 'status');
  assert.equal((await page.textContent(`#list li[data-id="${sent.id}"] .tag`)).trim(), 'Warning');
  assert.equal((await page.textContent(`#list li[data-id="${sent.id}"] .unread-word`)).trim(), 'Unread.');

  // Tab from the top until the item's button has focus (a bounded walk).
  await page.focus('#user');
  let focused = null;
  for (let i = 0; i < 8 && focused !== 'mark-read'; i++) {
    await page.keyboard.press('Tab');
    focused = await page.evaluate(() => document.activeElement.className);
  }
  assert.equal(focused, 'mark-read');
  assert.equal(await page.evaluate(() => document.activeElement.getAttribute('aria-label')), 'Mark as read: Review requested');
  await page.keyboard.press('Enter');
  await waitForBadge(page, '0');
  // Focus stays on the item, not lost to <body>, when its button disappears.
  assert.equal(await page.evaluate(() => document.activeElement.dataset.id), sent.id);
  await h.closePage(page);
});

test('screenshots of the page with every kind of notification', {
  timeout: 60_000,
  skip: process.env.HERALD_SCREENSHOTS === '1' ? false : 'set HERALD_SCREENSHOTS=1 to write them',
}, async () => {
  const user = 'demo-user';
  const outDir = path.join(repoRoot, 'docs', 'screenshots');
  await mkdir(outDir, { recursive: true });
  const samples = [
    { type: 'info', title: 'Weekly report is ready', message: 'Your analytics summary for last week is available.', link: '/reports/weekly', category: 'reports' },
    { type: 'warning', title: 'Disk usage at 91%', message: 'Volume /var/lib/postgres on db-2 is almost full.', category: 'infra' },
    { type: 'error', title: 'Payment failed', message: 'The card ending in 4242 was declined. Update it to keep your plan.', link: 'https://example.com/billing', category: 'billing' },
    { type: 'success', title: 'Deploy finished', message: 'api@3f9c1e2 is live in production (2m 14s).', category: 'deploys' },
    { type: 'info', title: 'New comment on “Q3 roadmap”', message: 'Priya: Looks good — can we move the search work up?' },
  ];
  const sent = [];
  for (const s of samples) { sent.push(await h.publish(user, s)); await sleep(5); }
  await h.api('POST', `/api/notifications/${user}/${sent[0].id}/read`);

  const desktop = await h.openPage(user, { viewport: { width: 1280, height: 800 } });
  await waitForCount(desktop, samples.length);
  const phone = await h.openPage(user, { viewport: { width: 390, height: 844 } });
  await waitForCount(phone, samples.length);
  const res = await h.api('POST', '/api/broadcast', { title: 'Maintenance tonight', message: 'Expect a short outage at 23:00 UTC.' });
  assert.equal(res.status, 200);
  await h.publish(user, { type: 'success', title: 'Invoice paid', message: 'INV-2041 was paid in full.' });
  for (const p of [desktop, phone]) await waitForCount(p, samples.length + 2);

  await desktop.screenshot({ path: path.join(outDir, 'page-desktop.png') });
  await phone.screenshot({ path: path.join(outDir, 'page-phone.png') });
  await h.closePage(desktop);
  await h.closePage(phone);
});
