// Auth in the browser (docs/protocol.md#auth): the page's token mode (a token field, the
// `herald_token` cookie, `/events/me` with a bearer header, never the token in the URL, archive
// and dismiss with the user's own token, sign out, reauth) and herald.js with header auth over
// fetch streaming (401, reauth with a fresh token).
// Run: `node --test tests/browser/` (after `cargo build`).

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  Harness, WAIT, sleep, freshUser, mintToken,
  waitForState, waitForCount, waitForBadge, listItems,
  blankPage, startClient, notificationsSeen, waitForNotifications, waitForClientState,
} from './harness.mjs';

const SECRET = 'browser-test-secret-0123456789abcdef';
const PUBLISH_KEY = 'pk-browser-test-key';

// Both halves of auth on: anonymous callers can read nothing.
const h = new Harness({ args: ['--jwt-secret', SECRET, '--retry-ms', '400'], publishKey: PUBLISH_KEY });
before(() => h.setup());
after(() => h.teardown());

/** Records every request the page makes: url, method and headers. */
function recordRequests(page) {
  const requests = [];
  page.on('request', (r) => requests.push({ url: r.url(), method: r.method(), headers: r.headers() }));
  return requests;
}

async function tokenCookie(page) {
  const cookies = await page.context().cookies();
  return cookies.find((c) => c.name === 'herald_token') || null;
}

async function signInWith(page, token) {
  await page.fill('#token', token);
  await page.press('#token', 'Enter');
}

function waitForSignIn(page, timeout = WAIT) {
  return page.waitForSelector('#signin:not([hidden])', { timeout });
}

describe('the page in token mode', () => {
  test('asks for a token, keeps it in a SameSite cookie, and streams /events/me with a bearer header', { timeout: 60_000 }, async () => {
    const user = freshUser('tina');
    const token = await mintToken(user, SECRET);
    const first = await h.publish(user, { title: 'Welcome', message: 'from history', type: 'success' });
    const page = await h.newPage();
    const requests = recordRequests(page);
    await page.goto(`${h.url}/`, { timeout: WAIT });

    // The anonymous history read answers 401: the page switches to its token field.
    await waitForSignIn(page);
    assert.equal(await page.isVisible('#who'), false);
    assert.equal(await page.isVisible('#account'), false);
    await waitForState(page, 'offline');
    assert.equal((await page.textContent('#conn-state')).trim(), 'Signed out');
    assert.match(await page.textContent('#notice'), /^This server needs a sign-in token\.$/);
    assert.equal(await page.evaluate(() => document.activeElement.id), 'token');
    assert.equal(await page.getAttribute('#token', 'type'), 'password');

    await signInWith(page, token);
    await waitForState(page, 'live');
    await waitForCount(page, 1);
    assert.equal(await page.textContent('#account-user'), user);
    assert.equal(await page.isVisible('#signin'), false);
    assert.equal(await page.inputValue('#token'), '', 'the field is cleared');

    const cookie = await tokenCookie(page);
    assert.ok(cookie, 'the herald_token cookie is set');
    assert.deepEqual([cookie.value, cookie.path, cookie.sameSite, cookie.httpOnly], [token, '/', 'Strict', false]);
    assert.ok(cookie.expires > Date.now() / 1000 + 3000 && cookie.expires <= Date.now() / 1000 + 3601, `expires ${cookie.expires}`);

    const stream = requests.filter((r) => new URL(r.url).pathname.startsWith('/events/'));
    assert.equal(stream.length, 1);
    assert.equal(new URL(stream[0].url).pathname, '/events/me');
    assert.equal(stream[0].headers.authorization, `Bearer ${token}`);
    const history = requests.find((r) => new URL(r.url).pathname === `/api/notifications/${user}`);
    assert.equal(history.headers.authorization, `Bearer ${token}`);
    assert.equal(stream[0].headers['last-event-id'], (await h.api('GET', `/api/notifications/${user}`)).body.lastEventId);

    const second = await h.publish(user, { title: 'Second', message: 'live', type: 'warning' });
    await waitForCount(page, 2);
    await waitForBadge(page, '2');
    // The badge changes at once; the server's state only once the request is answered.
    const [marked] = await Promise.all([
      page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname.endsWith('/read'), { timeout: WAIT }),
      page.click(`#list li[data-id="${first.id}"] .mark-read`),
    ]);
    assert.equal(marked.status(), 200);
    await waitForBadge(page, '1');
    const stored = await h.api('GET', `/api/notifications/${user}`);
    assert.deepEqual(stored.body.notifications.map((n) => [n.id, n.read]), [[second.id, false], [first.id, true]]);
    const markRead = requests.find((r) => r.method === 'POST');
    assert.equal(markRead.headers.authorization, `Bearer ${token}`);

    // The cookie carries the sign-in across a reload.
    await page.reload({ timeout: WAIT });
    await waitForState(page, 'live');
    await waitForCount(page, 2);
    assert.equal(await page.textContent('#account-user'), user);

    assert.ok(!page.url().includes('token'), page.url());
    for (const r of requests) assert.ok(!r.url.includes(token), `the token is in ${r.url}`);

    // Sign out: the cookie and the list go, the token field comes back.
    await page.click('#sign-out');
    await waitForSignIn(page);
    await waitForState(page, 'offline');
    assert.equal(await tokenCookie(page), null);
    assert.equal((await listItems(page)).length, 0);
    assert.equal(await page.textContent('#notice'), 'Signed out.');
    await h.closePage(page);
  });

  test('Archive and Dismiss work with the signed-in user\'s own token, and survive a reload', { timeout: 40_000 }, async () => {
    const user = freshUser('tess');
    const token = await mintToken(user, SECRET);
    const kept = await h.publish(user, { title: 'Kept', message: 'stays in the inbox' });
    const toArchive = await h.publish(user, { title: 'Later', message: 'archived' });
    const toDismiss = await h.publish(user, { title: 'Noise', message: 'dismissed' });
    const page = await h.newPage();
    const requests = recordRequests(page);
    await page.goto(`${h.url}/?token=${token}`, { timeout: WAIT });
    await waitForState(page, 'live');
    await waitForCount(page, 3);
    await waitForBadge(page, '3');

    for (const [id, button, method, status] of [[toArchive.id, 'archive', 'POST', 200], [toDismiss.id, 'dismiss', 'DELETE', 204]]) {
      const [response] = await Promise.all([
        page.waitForResponse((r) => r.request().method() === method && new URL(r.url()).pathname.includes(id), { timeout: WAIT }),
        page.click(`#list li[data-id="${id}"] .${button}`),
      ]);
      assert.equal(response.status(), status, `${button} answered ${response.status()}`);
    }
    await waitForCount(page, 1);
    await waitForBadge(page, '1');
    const changes = requests.filter((r) => r.method === 'POST' || r.method === 'DELETE')
      .map((r) => [r.method, new URL(r.url).pathname, r.headers.authorization]);
    assert.deepEqual(changes, [
      ['POST', `/api/notifications/${user}/${toArchive.id}/archive`, `Bearer ${token}`],
      ['DELETE', `/api/notifications/${user}/${toDismiss.id}`, `Bearer ${token}`],
    ]);
    await page.reload({ timeout: WAIT });
    await waitForState(page, 'live');
    await waitForCount(page, 1);
    assert.deepEqual((await listItems(page)).map((i) => i.id), [kept.id]);
    await waitForBadge(page, '1');
    const archived = await h.api('GET', `/api/notifications/${user}?archived=true`);
    assert.deepEqual(archived.body.notifications.map((n) => n.id), [toArchive.id]);
    await h.closePage(page);
  });

  test('a token in the address moves into the cookie and out of the address bar', { timeout: 30_000 }, async () => {
    const user = freshUser('linda');
    const token = await mintToken(user, SECRET);
    const page = await h.newPage();
    const requests = recordRequests(page);
    await page.goto(`${h.url}/?token=${token}`, { timeout: WAIT });
    await waitForState(page, 'live');
    assert.equal(new URL(page.url()).search, '');
    assert.equal((await tokenCookie(page)).value, token);
    // Only the navigation itself carried it; nothing the page asked for did.
    assert.deepEqual(requests.filter((r) => r.url.includes(token)).map((r) => new URL(r.url).pathname), ['/']);
    const sent = await h.publish(user, { title: 'Linked', message: 'signed in from a link' });
    await waitForCount(page, 1);
    assert.equal((await listItems(page))[0].id, sent.id);
    await h.closePage(page);
  });

  test('a forged token is refused with a message and the field stays', { timeout: 30_000 }, async () => {
    const user = freshUser('mallory');
    const token = await mintToken(user, SECRET);
    const forged = token.slice(0, -4) + (token.endsWith('AAAA') ? 'BBBB' : 'AAAA');
    const page = await h.newPage();
    await page.goto(`${h.url}/`, { timeout: WAIT });
    await waitForSignIn(page);
    await signInWith(page, forged);
    await page.waitForFunction(() => /was refused/.test(document.querySelector('#notice').textContent), null, { timeout: WAIT });
    assert.match(await page.textContent('#notice'), /^Your token was refused \(the token is not valid\)/);
    await waitForSignIn(page);
    await waitForState(page, 'offline');
    assert.equal(await tokenCookie(page), null);

    await signInWith(page, 'not a token');
    assert.match(await page.textContent('#notice'), /not a sign-in token/);
    await h.closePage(page);
  });

  test('when the token expires, the stream ends with reauth and the page asks for a new one', { timeout: 40_000 }, async () => {
    const user = freshUser('ephemeral');
    const page = await h.newPage();
    await page.goto(`${h.url}/`, { timeout: WAIT });
    await waitForSignIn(page);
    await signInWith(page, await mintToken(user, SECRET, '3s'));
    await waitForState(page, 'live');
    const sent = await h.publish(user, { title: 'Before expiry', message: 'stays listed' });
    await waitForCount(page, 1);

    await waitForSignIn(page, 10_000);
    await waitForState(page, 'offline');
    assert.match(await page.textContent('#notice'), /session has expired/);
    assert.equal(await tokenCookie(page), null);
    assert.deepEqual((await listItems(page)).map((i) => i.id), [sent.id], 'the list stays for its reader');

    const fresh = await mintToken(user, SECRET);
    await signInWith(page, fresh);
    await waitForState(page, 'live');
    await waitForCount(page, 1);
    await h.closePage(page);
  });
});

describe('herald.js with a token', () => {
  test('streams over fetch with an Authorization header: no token in the URL, no cookie', { timeout: 30_000 }, async () => {
    const user = freshUser('headers');
    const token = await mintToken(user, SECRET);
    const page = await blankPage(h);
    const requests = recordRequests(page);
    await startClient(page, { token });
    await waitForClientState(page, 'open');
    const sent = await h.publish(user, { title: 'over fetch', message: 'with a header' });
    await waitForNotifications(page, 1);
    assert.deepEqual((await notificationsSeen(page)).map((n) => n.title), ['over fetch']);
    assert.equal((await page.evaluate(() => window.rec.events.at(-1).data.id)), sent.id);
    const stream = requests.filter((r) => new URL(r.url).pathname.startsWith('/events/'));
    assert.deepEqual(stream.map((r) => [new URL(r.url).pathname + new URL(r.url).search, r.headers.authorization]),
      [['/events/me', `Bearer ${token}`]]);
    assert.deepEqual(await page.context().cookies(), []);
    await page.evaluate(() => window.sub.close());
    await h.closePage(page);
  });

  test('a token the server refuses ends in onError with 401, and no retry', { timeout: 30_000 }, async () => {
    const stranger = await mintToken('someone', 'a-different-secret-entirely-0123456789');
    const page = await blankPage(h);
    const requests = recordRequests(page);
    await startClient(page, { token: stranger });
    await page.waitForFunction(() => window.rec.errors.length === 1, null, { timeout: WAIT });
    await sleep(1500); // a retry would have happened by now
    assert.deepEqual(await page.evaluate(() => window.rec.errors), [{ name: 'HeraldError', message: 'the token is not valid', status: 401 }]);
    assert.deepEqual(await page.evaluate(() => window.rec.states.map((s) => [s.state, s.reason, s.status])),
      [['connecting', null, null], ['closed', 'error', 401]]);
    assert.equal(requests.filter((r) => new URL(r.url).pathname === '/events/me').length, 1);
    await h.closePage(page);
  });

  test('reauth: onReauth hands back a fresh token and the stream resumes from Last-Event-ID', { timeout: 40_000 }, async () => {
    const user = freshUser('renew');
    const fresh = await mintToken(user, SECRET, '1h');
    const page = await blankPage(h);
    const requests = recordRequests(page);
    await page.evaluate((t) => { window.freshToken = t; }, fresh);
    const shortLived = await mintToken(user, SECRET, '3s');
    await startClient(page, { token: shortLived });
    await waitForClientState(page, 'open');
    await h.publish(user, { title: 'before', message: 'old token' });
    await waitForNotifications(page, 1);
    const lastId = await page.evaluate(() => window.sub.lastEventId);

    await page.waitForFunction(() => window.rec.reauths.length === 1, null, { timeout: 10_000 });
    await waitForClientState(page, 'open', 2);
    await h.publish(user, { title: 'after', message: 'fresh token' });
    await waitForNotifications(page, 2);
    assert.deepEqual((await notificationsSeen(page)).map((n) => n.title), ['before', 'after']);
    assert.deepEqual(await page.evaluate(() => window.rec.reauths), [{ reason: 'token expired' }]);
    const stream = requests.filter((r) => new URL(r.url).pathname === '/events/me');
    assert.deepEqual(stream.map((r) => [r.headers.authorization, r.headers['last-event-id'] ?? null]),
      [[`Bearer ${shortLived}`, null], [`Bearer ${fresh}`, lastId]]);
    assert.deepEqual(await page.evaluate(() => window.rec.states.map((s) => [s.state, s.reason])),
      [['connecting', null], ['open', null], ['reconnecting', 'reauth'], ['open', null]]);
    await page.evaluate(() => window.sub.close());
    await h.closePage(page);
  });
});

describe('a server whose streams need a token but whose history is open', () => {
  // --jwt-secret without --publish-key: anonymous history reads pass, streams do not.
  const streamsOnly = new Harness({ args: ['--jwt-secret', SECRET] });
  before(() => streamsOnly.setup());
  after(() => streamsOnly.teardown());

  test('the page notices the refused stream and asks for a token', { timeout: 30_000 }, async () => {
    const user = freshUser('half');
    const page = await streamsOnly.newPage();
    await page.goto(`${streamsOnly.url}/?user=${user}`, { timeout: WAIT });
    await waitForSignIn(page);
    assert.match(await page.textContent('#notice'), /needs a sign-in token to open a stream/);
    await signInWith(page, await mintToken(user, SECRET));
    await waitForState(page, 'live');
    await streamsOnly.publish(user, { title: 'made it', message: 'over /events/me' });
    await waitForCount(page, 1);
    await streamsOnly.closePage(page);
  });
});
