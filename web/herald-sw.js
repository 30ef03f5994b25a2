// herald-sw.js: herald's service worker (docs/protocol.md#web-push), served at `/herald-sw.js`
// and registered by `enablePush()` in /herald.js. It shows what herald pushes (and what an open
// but hidden page hands it), answers a click on it, and renews the push subscription when the
// browser replaces it. No dependencies, no build step.
//
// It never stores a token: a renewed subscription is sent with this origin's cookies (the
// page's `herald_token`), and when that is refused the page's next `enablePush()` sends it.
'use strict';

// Where enablePush() keeps what a renewal needs: { server, user, scope, applicationServerKey,
// credentials, endpoint, id }. The same names are in web/herald.js.
const DB_NAME = 'herald-push';
const DB_STORE = 'state';
const DB_KEY = 'subscription';

// One icon per notification type, drawn inline so that showing one needs no request.
function icon(colour, glyph) {
  const svg = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 96 96">' +
    '<circle cx="48" cy="48" r="48" fill="' + colour + '"/>' +
    '<path d="' + glyph + '" fill="none" stroke="#fff" stroke-width="10" stroke-linecap="round" stroke-linejoin="round"/>' +
    '</svg>';
  return 'data:image/svg+xml,' + encodeURIComponent(svg);
}
const ICONS = {
  info: icon('#2563eb', 'M48 44v24M48 28v1'),
  success: icon('#15803d', 'M28 50l13 13 27-29'),
  warning: icon('#b45309', 'M48 26v28M48 70v1'),
  error: icon('#c81e1e', 'M32 32l32 32M64 32L32 64'),
};

self.addEventListener('install', () => {
  // Nothing to cache and no fetch handler: a new version may take over at once.
  self.skipWaiting();
});

self.addEventListener('push', (event) => {
  event.waitUntil(show(pushed(event.data)));
});

// An open page that is hidden hands new notifications here, so that they look and click the
// same as pushed ones.
self.addEventListener('message', (event) => {
  const message = event.data;
  if (message && message.type === 'herald:show' && message.notification && typeof message.notification === 'object') {
    event.waitUntil(show(message.notification));
  }
});

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  event.waitUntil(openFor(event.notification.data));
});

self.addEventListener('pushsubscriptionchange', (event) => {
  event.waitUntil(renew(event.newSubscription));
});

// The notification's JSON, exactly as the stream's `notification` event carries it. A push
// must always show something (the subscription is userVisibleOnly), even one it cannot read.
function pushed(data) {
  if (!data) return {};
  try {
    const n = data.json();
    return n && typeof n === 'object' ? n : {};
  } catch (_) {
    return {};
  }
}

function show(n) {
  const type = Object.prototype.hasOwnProperty.call(ICONS, n.type) ? n.type : 'info';
  const title = typeof n.title === 'string' && n.title !== '' ? n.title : 'New notification';
  const options = {
    body: typeof n.message === 'string' ? n.message : '',
    icon: ICONS[type],
    data: { id: n.id == null ? null : String(n.id), link: typeof n.link === 'string' ? n.link : null },
  };
  // The id as tag: a repeated push of the same notification replaces it, never doubles it.
  if (n.id != null) options.tag = String(n.id);
  const at = Date.parse(n.timestamp);
  if (!isNaN(at)) options.timestamp = at;
  return self.registration.showNotification(title, options);
}

// A click: back to an open page of this site if there is one; else the notification's link
// (an http(s) URL or a path on this server, as the page would link it); else the page.
async function openFor(data) {
  const scope = self.registration.scope;
  const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
  const open = windows.find((client) => client.url.startsWith(scope));
  if (open) return open.focus();
  return self.clients.openWindow(safeLink(data && data.link) || scope);
}

function safeLink(link) {
  if (typeof link !== 'string') return null;
  // "//host" and "/\host" would both mean another host: only a single leading slash is a path.
  if (/^https?:\/\//i.test(link)) return link;
  if (/^\/(?![/\\])/.test(link)) return new URL(link, self.registration.scope).href;
  return null;
}

// The browser replaced the subscription (Firefox hands the new one over; elsewhere subscribe
// again with the same key), so tell herald about the new one and forget the old one.
async function renew(given) {
  const saved = await readState();
  if (!saved) return; // not subscribed through enablePush(): nothing of herald's to renew
  const subscription = given || await self.registration.pushManager.subscribe({
    userVisibleOnly: true,
    applicationServerKey: base64urlBytes(saved.applicationServerKey),
  });
  // Until herald has stored it, the id is unknown: pushStatus() then says so, and the page's
  // next enablePush() sends it.
  await writeState({ ...saved, endpoint: subscription.endpoint, id: null });
  const base = saved.server + '/api/push/' + encodeURIComponent(saved.user) + '/subscriptions';
  const { endpoint, keys } = subscription.toJSON();
  const response = await fetch(base, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    body: JSON.stringify({ endpoint, keys }),
    credentials: saved.credentials,
    cache: 'no-store',
  });
  if (!response.ok) throw new Error('herald refused the renewed push subscription: HTTP ' + response.status);
  const { id } = await response.json();
  await writeState({ ...saved, endpoint: subscription.endpoint, id: String(id) });
  if (saved.id && saved.id !== String(id)) {
    // The old one would be dropped at its first failed push anyway; this saves that push.
    await fetch(base + '/' + encodeURIComponent(saved.id), {
      method: 'DELETE', credentials: saved.credentials, cache: 'no-store',
    }).catch(() => {});
  }
}

function base64urlBytes(text) {
  const binary = atob(text.replace(/-/g, '+').replace(/_/g, '/'));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

function openDb() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(DB_STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function readState() {
  const db = await openDb();
  try {
    return await new Promise((resolve, reject) => {
      const request = db.transaction(DB_STORE).objectStore(DB_STORE).get(DB_KEY);
      request.onsuccess = () => resolve(request.result || null);
      request.onerror = () => reject(request.error);
    });
  } finally {
    db.close();
  }
}

async function writeState(value) {
  const db = await openDb();
  try {
    await new Promise((resolve, reject) => {
      const tx = db.transaction(DB_STORE, 'readwrite');
      tx.objectStore(DB_STORE).put(value, DB_KEY);
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}
