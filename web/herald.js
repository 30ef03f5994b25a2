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

  return Object.freeze({ subscribe, SseParser, HeraldError, backoffDelay });
})();

// ---- ES module exports: /herald.global.js is this file up to the line below ----
export const { subscribe, SseParser, HeraldError, backoffDelay } = Herald;
export default Herald;
