// herald.js: the browser client for herald's event streams (docs/protocol.md#streams), served at
// `/herald.js` (an ES module) and `/herald.global.js` (the same code as a classic script that
// sets `window.Herald`). Types: `/herald.d.ts`. No dependencies, no build step.
//
//   import { subscribe } from '/herald.js';
//   const sub = subscribe({ user: 'alice', onNotification: (n) => console.log(n.title) });
//
// A subscription owns one connection at a time. It reconnects by itself with exponential
// backoff and full jitter (the server's `retry:` is the base), always from the last event id it
// delivered, so nothing is missed or repeated across drops and server restarts. By default it
// streams over fetch(), which can send `Authorization` and `Last-Event-ID` headers and sees the
// status of a refusal; `transport: 'eventsource'` uses the browser's EventSource instead.
//
// enablePush() / disablePush() / pushStatus() turn this browser's Web Push on and off for one
// user, through the service worker /herald-sw.js (docs/protocol.md#web-push).
var Herald = (function () {
  'use strict';

  const DEFAULT_BASE_MS = 1000;
  const DEFAULT_MAX_MS = 30000;
  const KNOWN_EVENTS = [
    'connected', 'notification', 'announcement', 'read', 'updated', 'deleted', 'archived', 'resync', 'reauth',
  ];

  /** An error that ends a subscription or fails one attempt; `status` is the HTTP status, if any. */
  class HeraldError extends Error {
    constructor(message, status, body) {
      super(message);
      this.name = 'HeraldError';
      this.status = status === undefined ? null : status;
      this.body = body === undefined ? null : body;
    }
  }

  /**
   * An incremental parser of the `text/event-stream` format (WHATWG HTML §9.2.6): lines end in
   * CR, LF or CRLF (also when split across chunks), `data:` lines join with "\n", lines starting
   * with `:` are comments, `retry:` takes only digits, an `id` containing NUL is ignored, and an
   * event with no data is not dispatched. Feed it decoded text with push().
   */
  class SseParser {
    constructor(handlers) {
      this.handlers = handlers || {};
      this.pending = '';
      this.afterCR = false;
      this.started = false;
      this.type = '';
      this.data = [];
      this.id = null;
      this.lastEventId = '';
    }

    push(text) {
      if (!this.started) {
        if (text.length === 0) return;
        this.started = true;
        if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
      }
      let start = 0;
      if (this.afterCR) {
        this.afterCR = false;
        if (text.charCodeAt(0) === 10) start = 1; // the LF of a CRLF split across chunks
      }
      const buffer = start === 0 && this.pending ? this.pending + text : text.slice(start);
      const breaks = /\r\n|\r|\n/g;
      let from = 0;
      let match;
      while ((match = breaks.exec(buffer)) !== null) {
        // A CR at the very end may be the first half of a CRLF: the next chunk decides.
        if (match[0] === '\r' && match.index === buffer.length - 1) this.afterCR = true;
        const line = buffer.slice(from, match.index);
        from = breaks.lastIndex;
        this.line(line);
      }
      this.pending = buffer.slice(from);
    }

    /** The stream ended: an event without its blank line is dropped, as the standard says. */
    end() {
      this.pending = '';
      this.afterCR = false;
      this.type = '';
      this.data = [];
      this.id = null;
    }

    line(line) {
      if (line === '') return this.dispatch();
      if (line.charCodeAt(0) === 58 /* : */) {
        if (this.handlers.onComment) this.handlers.onComment(line.slice(1).replace(/^ /, ''));
        return;
      }
      const colon = line.indexOf(':');
      const field = colon === -1 ? line : line.slice(0, colon);
      let value = colon === -1 ? '' : line.slice(colon + 1);
      if (value.charCodeAt(0) === 32) value = value.slice(1);
      switch (field) {
        case 'event': this.type = value; break;
        case 'data': this.data.push(value); break;
        case 'id':
          if (value.indexOf('\0') === -1) { this.lastEventId = value; this.id = value; }
          break;
        case 'retry':
          if (/^[0-9]+$/.test(value) && this.handlers.onRetry) this.handlers.onRetry(Number(value));
          break;
        default: break; // unknown fields are ignored
      }
    }

    dispatch() {
      const type = this.type || 'message';
      const data = this.data;
      const id = this.id;
      this.type = '';
      this.data = [];
      this.id = null;
      if (data.length === 0) return;
      if (this.handlers.onEvent) {
        this.handlers.onEvent({ type, data: data.join('\n'), id, lastEventId: this.lastEventId });
      }
    }
  }

  /**
   * The wait before reconnect attempt `attempt` (1, 2, …): "full jitter", a uniform draw from
   * [0, min(maxMs, baseMs · 2^(attempt-1))), so that clients dropped together do not return
   * together.
   */
  function backoffDelay(attempt, baseMs, maxMs, random) {
    const draw = random || Math.random;
    const exponent = Math.min(Math.max(attempt, 1) - 1, 30);
    const cap = Math.min(maxMs, baseMs * Math.pow(2, exponent));
    return Math.floor(draw() * cap);
  }

  /** Seconds or an HTTP date, as in `Retry-After`; null when absent or unreadable. */
  function retryAfterMs(value) {
    if (!value) return null;
    if (/^\s*[0-9]+\s*$/.test(value)) return Number(value) * 1000;
    const at = Date.parse(value);
    return isNaN(at) ? null : Math.max(0, at - Date.now());
  }

  function streamUrl(options) {
    if (options.url != null) return String(options.url);
    const server = options.server == null ? '' : String(options.server).replace(/\/+$/, '');
    if (options.user != null) return server + '/events/' + encodeURIComponent(String(options.user));
    if (options.token != null) return server + '/events/me';
    throw new TypeError('subscribe() needs `url`, `user`, or `token` (for /events/me)');
  }

  function withQuery(url, name, value) {
    const base = typeof location !== 'undefined' ? location.href : undefined;
    const parsed = new URL(url, base);
    parsed.searchParams.set(name, value);
    return parsed.href;
  }

  async function errorOf(response) {
    let body = null;
    let message = 'HTTP ' + response.status;
    try {
      body = await response.json();
      if (body && typeof body.error === 'string') message = body.error;
    } catch (_) { /* not JSON */ }
    return new HeraldError(message, response.status, body);
  }

  // Runs a user's callback; an exception surfaces as an uncaught error but never stops the stream.
  function call(fn, ...args) {
    if (typeof fn !== 'function') return undefined;
    try {
      return fn(...args);
    } catch (err) {
      setTimeout(() => { throw err; }, 0);
      return undefined;
    }
  }

  /**
   * Opens a subscription. Returns `{ close(), lastEventId, state }` at once; the connection is
   * made right after, and every change is reported through the callbacks.
   */
  function subscribe(options) {
    if (!options || typeof options !== 'object') throw new TypeError('subscribe() takes an options object');
    const o = options;
    const url = streamUrl(o);
    const transport = o.transport || 'fetch';
    if (transport !== 'fetch' && transport !== 'eventsource') {
      throw new TypeError("transport must be 'fetch' or 'eventsource'");
    }
    if (transport === 'eventsource' && o.token != null) {
      throw new TypeError('EventSource cannot send an Authorization header: use the fetch transport with a token');
    }
    const fetchImpl = o.fetch || (typeof fetch === 'function' ? fetch.bind(globalThis) : null);
    if (transport === 'fetch' && !fetchImpl) throw new TypeError('no fetch() here: pass options.fetch');
    const backoff = o.backoff || {};
    const baseDefault = backoff.baseMs > 0 ? backoff.baseMs : DEFAULT_BASE_MS;
    const maxMs = backoff.maxMs > 0 ? backoff.maxMs : DEFAULT_MAX_MS;
    const idleTimeoutMs = o.idleTimeoutMs > 0 ? o.idleTimeoutMs : 0;

    let lastEventId = o.lastEventId == null || o.lastEventId === '' ? null : String(o.lastEventId);
    let state = 'idle';
    let closed = false;
    let attempt = 0;       // failed attempts since the last delivered event
    let serverRetryMs = null;
    let freshToken = null; // a token handed back by onReauth
    let generation = 0;    // bumped whenever the current connection is abandoned
    let controller = null;
    let source = null;
    let retryTimer = 0;
    let idleTimer = 0;

    function setState(next, info) {
      state = next;
      call(o.onStateChange, next, info || {});
    }

    function abandon() {
      generation += 1;
      clearTimeout(retryTimer);
      clearTimeout(idleTimer);
      retryTimer = 0;
      if (controller) { controller.abort(); controller = null; }
      if (source) { source.close(); source = null; }
    }

    function finish(info) {
      if (closed) return;
      closed = true;
      abandon();
      if (typeof removeEventListener === 'function') removeEventListener('online', onOnline);
      setState('closed', info);
    }

    function fail(error) {
      finish({ reason: 'error', error, status: error.status });
      call(o.onError, error);
    }

    function scheduleRetry(info) {
      if (closed) return;
      abandon();
      attempt += 1;
      let delayMs = backoffDelay(attempt, serverRetryMs || baseDefault, maxMs);
      if (info.retryAfterMs != null) delayMs = Math.max(delayMs, info.retryAfterMs);
      const mine = generation;
      retryTimer = setTimeout(() => { if (mine === generation) connect(); }, delayMs);
      setState('reconnecting', {
        attempt, delayMs, status: info.status == null ? null : info.status, error: info.error || null,
      });
    }

    // Back online while waiting to retry: do not wait out the backoff.
    function onOnline() {
      if (!closed && retryTimer) { abandon(); connect(); }
    }

    async function tokenNow() {
      if (freshToken) return freshToken;
      if (typeof o.token === 'function') return o.token();
      return o.token == null ? null : o.token;
    }

    function deliver(type, text, id) {
      if (id) lastEventId = id;
      let data = text;
      try { data = JSON.parse(text); } catch (_) { /* left as text */ }
      const event = { type, id: id || null, data };
      // Something arrived: the connection works, so the next drop starts the backoff afresh.
      attempt = 0;
      call(o.onEvent, event);
      switch (type) {
        case 'notification': call(o.onNotification, data, event); break;
        case 'announcement': call(o.onAnnouncement, data, event); break;
        case 'read': call(o.onRead, data, event); break;
        case 'updated': call(o.onUpdate, data, event); break;
        case 'deleted': call(o.onDelete, data, event); break;
        case 'archived': call(o.onArchive, data, event); break;
        case 'resync': call(o.onResync, data, event); break;
        case 'reauth': reauth(data); break;
        default: break;
      }
    }

    // The token is over and the server ends the stream: go on only with a fresh token.
    function reauth(data) {
      abandon();
      freshToken = null;
      const next = call(o.onReauth, data);
      const fromFunction = o.onReauth === undefined && typeof o.token === 'function';
      if (next === undefined && !fromFunction) {
        finish({ reason: 'reauth' });
        return;
      }
      setState('reconnecting', { attempt: 0, delayMs: 0, status: null, error: null, reason: 'reauth' });
      const mine = generation;
      Promise.resolve(next).then((token) => {
        if (closed || mine !== generation) return;
        if (typeof token === 'string' && token !== '') {
          freshToken = token;
          connect();
        } else if (fromFunction) {
          connect();
        } else {
          finish({ reason: 'reauth' });
        }
      }, (err) => {
        if (!closed && mine === generation) fail(err instanceof HeraldError ? err : new HeraldError(String(err && err.message || err)));
      });
    }

    function connect() {
      if (closed) return;
      abandon();
      if (state === 'idle') setState('connecting', { attempt: 0 });
      if (transport === 'eventsource') connectEventSource(generation);
      else connectFetch(generation);
    }

    async function connectFetch(mine) {
      const ctrl = new AbortController();
      controller = ctrl;
      let response;
      try {
        const token = await tokenNow();
        if (mine !== generation) return;
        const headers = { Accept: 'text/event-stream' };
        if (token) headers.Authorization = 'Bearer ' + token;
        if (lastEventId) headers['Last-Event-ID'] = lastEventId;
        response = await fetchImpl(url, {
          headers,
          signal: ctrl.signal,
          cache: 'no-store',
          credentials: o.withCredentials ? 'include' : 'same-origin',
        });
      } catch (err) {
        if (mine === generation) scheduleRetry({ error: err });
        return;
      }
      if (mine !== generation) return;
      if (!response.ok) {
        const error = await errorOf(response);
        if (mine !== generation) return;
        const status = response.status;
        // 408, 429 and 5xx are worth another try; any other refusal would be refused again.
        if (status === 408 || status === 429 || status >= 500) {
          scheduleRetry({ status, error, retryAfterMs: retryAfterMs(response.headers.get('retry-after')) });
        } else {
          fail(error);
        }
        return;
      }
      const type = response.headers.get('content-type') || '';
      if (!/^text\/event-stream/i.test(type) || !response.body) {
        scheduleRetry({ status: response.status, error: new HeraldError('not an event stream: ' + (type || 'no content type'), response.status) });
        return;
      }
      setState('open', { url });
      const parser = new SseParser({
        onEvent: (ev) => { if (mine === generation) deliver(ev.type, ev.data, ev.id); },
        onRetry: (ms) => { serverRetryMs = ms; },
      });
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      const watch = () => {
        clearTimeout(idleTimer);
        if (idleTimeoutMs) idleTimer = setTimeout(() => { if (mine === generation) ctrl.abort(); }, idleTimeoutMs);
      };
      watch();
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (mine !== generation) return;
          if (done) break;
          watch();
          parser.push(decoder.decode(value, { stream: true }));
          if (mine !== generation) return;
        }
      } catch (err) {
        if (mine === generation) scheduleRetry({ error: err });
        return;
      }
      parser.end();
      scheduleRetry({ error: new HeraldError('the server ended the stream') });
    }

    function connectEventSource(mine) {
      // EventSource cannot set headers: the query parameter carries the position instead.
      const target = lastEventId ? withQuery(url, 'lastEventId', lastEventId) : url;
      const es = new EventSource(target, { withCredentials: !!o.withCredentials });
      source = es;
      es.onopen = () => { if (mine === generation) setState('open', { url }); };
      const forward = (type) => (ev) => { if (mine === generation) deliver(type, ev.data, ev.lastEventId); };
      for (const type of KNOWN_EVENTS) es.addEventListener(type, forward(type));
      es.onmessage = forward('message');
      // EventSource's own reconnection has no jitter and ends for good on any refusal, so every
      // error closes it and this subscription reconnects on its own schedule.
      es.onerror = () => {
        if (mine === generation) scheduleRetry({ error: new HeraldError('the event stream failed') });
      };
    }

    if (typeof addEventListener === 'function') addEventListener('online', onOnline);
    // Connect once the caller holds the subscription, so callbacks may use it.
    Promise.resolve().then(connect);

    return {
      close() { finish({ reason: 'closed' }); },
      get lastEventId() { return lastEventId; },
      get state() { return state; },
    };
  }

  // ---- Web Push (docs/protocol.md#web-push) ----------------------------------------------------
  // enablePush() subscribes this browser to one user's pushes through herald's service worker,
  // /herald-sw.js. What it did is kept in IndexedDB, never with a token: the worker reads it to
  // renew the subscription, and disablePush() and pushStatus() read it back. The same names are
  // in web/herald-sw.js.
  const PUSH_DB = 'herald-push';
  const PUSH_STORE = 'state';
  const PUSH_KEY = 'subscription';

  /** What this browser lacks for push here, or null. */
  function pushUnsupported() {
    if (typeof navigator === 'undefined' || !navigator.serviceWorker) {
      return typeof isSecureContext !== 'undefined' && !isSecureContext
        ? 'service workers (the page is not served over https)'
        : 'service workers';
    }
    if (typeof PushManager === 'undefined') return 'Push API';
    if (typeof Notification === 'undefined') return 'Notifications API';
    if (typeof indexedDB === 'undefined') return 'IndexedDB';
    return null;
  }

  function pushDb() {
    return new Promise((resolve, reject) => {
      const request = indexedDB.open(PUSH_DB, 1);
      request.onupgradeneeded = () => request.result.createObjectStore(PUSH_STORE);
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
  }

  // One read or write of the saved state; `value` undefined reads, null deletes.
  async function pushState(value) {
    const db = await pushDb();
    try {
      return await new Promise((resolve, reject) => {
        const tx = db.transaction(PUSH_STORE, value === undefined ? 'readonly' : 'readwrite');
        const store = tx.objectStore(PUSH_STORE);
        const request = value === undefined ? store.get(PUSH_KEY)
          : value === null ? store.delete(PUSH_KEY) : store.put(value, PUSH_KEY);
        tx.oncomplete = () => resolve(value === undefined ? request.result || null : null);
        tx.onerror = () => reject(tx.error);
      });
    } finally {
      db.close();
    }
  }

  function base64urlBytes(text) {
    const binary = atob(String(text).replace(/-/g, '+').replace(/_/g, '/'));
    return Uint8Array.from(binary, (c) => c.charCodeAt(0));
  }

  function sameBytes(buffer, bytes) {
    if (!buffer) return false;
    const a = new Uint8Array(buffer);
    return a.length === bytes.length && a.every((b, i) => b === bytes[i]);
  }

  /** The server's absolute base URL, as the service worker needs it later. */
  function serverBase(o) {
    if (o.server == null) return location.origin;
    return new URL(String(o.server), location.href).href.replace(/\/+$/, '');
  }

  // The permission prompt; older Safari answers through a callback only.
  function askPermission() {
    if (Notification.permission === 'granted') return Promise.resolve('granted');
    return new Promise((resolve) => {
      const answer = Notification.requestPermission(resolve);
      if (answer && typeof answer.then === 'function') answer.then(resolve, () => resolve('default'));
    });
  }

  // The push requests: a refusal becomes a HeraldError that names `what` ("the server refused
  // <what> (403): <its error>"), and so does an unreachable server.
  async function pushRequest(o, url, init, what) {
    const fetchImpl = o.fetch || fetch.bind(globalThis);
    const headers = { Accept: 'application/json' };
    if (init.body) headers['Content-Type'] = 'application/json';
    const token = typeof o.token === 'function' ? await o.token() : o.token;
    if (token) headers.Authorization = 'Bearer ' + token;
    let response;
    try {
      response = await fetchImpl(url, {
        ...init, headers, cache: 'no-store', credentials: o.withCredentials ? 'include' : 'same-origin',
      });
    } catch (err) {
      throw new HeraldError('could not reach the server for ' + what + ': ' + (err && err.message || err));
    }
    if (!response.ok) {
      const refusal = await errorOf(response);
      refusal.message = 'the server refused ' + what + ' (' + response.status + '): ' + refusal.message;
      throw refusal;
    }
    return response.status === 204 ? null : response.json();
  }

  async function serverKey(o, base) {
    let body;
    try {
      body = await pushRequest(o, base + '/api/push/public-key', { method: 'GET' }, 'its push key');
    } catch (err) {
      if (err.status === 404) throw new HeraldError('push is off on this server', 404, err.body);
      throw err;
    }
    if (!body || typeof body.publicKey !== 'string') throw new HeraldError("the server's push key is not readable");
    return body.publicKey;
  }

  async function registerWorker(url) {
    let registration;
    try {
      registration = await navigator.serviceWorker.register(url);
    } catch (err) {
      throw new HeraldError('could not register the service worker ' + url + ': ' + (err && err.message || err));
    }
    if (registration.active) return registration;
    const worker = registration.installing || registration.waiting;
    if (!worker) return navigator.serviceWorker.ready;
    await new Promise((resolve, reject) => {
      const check = () => {
        if (worker.state === 'activated') resolve();
        else if (worker.state === 'redundant') reject(new HeraldError('the service worker ' + url + ' failed to install'));
      };
      worker.addEventListener('statechange', check);
      check();
    });
    return registration;
  }

  /**
   * Subscribes this browser to `user`'s pushes (docs/protocol.md#web-push): asks for the
   * permission (call it from a click), registers /herald-sw.js, subscribes with the server's
   * key and stores the subscription on the server. Resolves with herald's id for it.
   */
  async function enablePush(options) {
    if (!options || typeof options !== 'object') throw new TypeError('enablePush() takes an options object');
    const o = options;
    if (typeof o.user !== 'string' || o.user === '') throw new TypeError('enablePush() needs `user`: whose notifications to push');
    const missing = pushUnsupported();
    if (missing) throw new HeraldError('push notifications are not supported here: this browser has no ' + missing);
    // Asked before anything is awaited, while the click that called this still counts.
    const permission = await askPermission();
    if (permission === 'denied') {
      throw new HeraldError("notifications are blocked for this site: allow them in the browser's site settings");
    }
    if (permission !== 'granted') throw new HeraldError('notifications were not allowed: the permission prompt was dismissed');

    const base = serverBase(o);
    const key = await serverKey(o, base);
    const keyBytes = base64urlBytes(key);
    const registration = await registerWorker(o.serviceWorker == null ? base + '/herald-sw.js' : String(o.serviceWorker));
    const saved = await pushState();
    let subscription = await registration.pushManager.getSubscription();
    if (subscription && (!sameBytes(subscription.options.applicationServerKey, keyBytes)
        || (saved && (saved.user !== o.user || saved.server !== base)))) {
      // Bound to another key, user or server: a fresh one, so that nothing meant for the old
      // one arrives here any more.
      await subscription.unsubscribe();
      subscription = null;
    }
    const fresh = !subscription;
    if (fresh) {
      try {
        subscription = await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: keyBytes });
      } catch (err) {
        throw new HeraldError('the browser could not subscribe to its push service: ' + (err && err.message || err));
      }
    }
    const { endpoint, keys } = subscription.toJSON();
    const list = base + '/api/push/' + encodeURIComponent(o.user) + '/subscriptions';
    let stored;
    try {
      stored = await pushRequest(o, list, { method: 'POST', body: JSON.stringify({ endpoint, keys }) }, 'the push subscription');
    } catch (err) {
      // One made just now is of no use unstored; one from before may still be stored.
      if (fresh) await subscription.unsubscribe().catch(() => {});
      throw err;
    }
    const id = String(stored && stored.id);
    await pushState({
      server: base, user: o.user, scope: registration.scope, applicationServerKey: key,
      credentials: o.withCredentials ? 'include' : 'same-origin', endpoint, id,
    });
    if (saved && saved.id && saved.id !== id && saved.user === o.user && saved.server === base) {
      // The one this replaced would be dropped at its first failed push; this saves that push.
      pushRequest(o, list + '/' + encodeURIComponent(saved.id), { method: 'DELETE' }, 'the old subscription').catch(() => {});
    }
    return id;
  }

  /**
   * Stops pushes to this browser: unsubscribes it, then deletes the subscription on the server
   * (with `options.token`, as for enablePush). When the server cannot be told, the browser is
   * unsubscribed all the same and the promise rejects; calling it again tells the server.
   */
  async function disablePush(options) {
    const o = options || {};
    if (pushUnsupported()) return;
    const saved = await pushState();
    const registration = await navigator.serviceWorker.getRegistration(saved ? saved.scope : undefined);
    const subscription = registration ? await registration.pushManager.getSubscription() : null;
    if (subscription) await subscription.unsubscribe();
    if (!saved) return;
    if (saved.id) {
      const url = saved.server + '/api/push/' + encodeURIComponent(saved.user) + '/subscriptions/' + encodeURIComponent(saved.id);
      try {
        await pushRequest({ ...o, withCredentials: saved.credentials === 'include' }, url, { method: 'DELETE' }, 'the deletion of the push subscription');
      } catch (err) {
        // 404: forgotten already.
        if (err.status !== 404) throw new HeraldError('turned off on this device, but ' + err.message, err.status, err.body);
      }
    }
    await pushState(null);
  }

  /**
   * Whether this browser gets pushes, and for whom: `{ user, server, id }`, or null. `id` is
   * null when the browser renewed its subscription and the server has not stored the new one
   * yet: call enablePush() again to send it.
   */
  async function pushStatus() {
    if (pushUnsupported() || Notification.permission !== 'granted') return null;
    const saved = await pushState();
    if (!saved) return null;
    const registration = await navigator.serviceWorker.getRegistration(saved.scope);
    const subscription = registration ? await registration.pushManager.getSubscription() : null;
    if (!subscription) return null;
    return { user: saved.user, server: saved.server, id: subscription.endpoint === saved.endpoint ? saved.id : null };
  }

  return Object.freeze({ subscribe, SseParser, HeraldError, backoffDelay, enablePush, disablePush, pushStatus });
})();

// ---- ES module exports: /herald.global.js is this file up to the line below ----
export const { subscribe, SseParser, HeraldError, backoffDelay, enablePush, disablePush, pushStatus } = Herald;
export default Herald;
