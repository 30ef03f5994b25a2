// Types for herald.js, the browser client for herald's event streams (served at /herald.js;
// these declarations at /herald.d.ts). The wire format is docs/protocol.md#streams; payloads are
// docs/protocol.md#events.

/** The four kinds of notification; each has its own colour and label on the page. */
export type NotificationType = 'info' | 'success' | 'warning' | 'error';

/** A notification for one user (`event: notification`), as stored and as listed by history. */
export interface Notification {
  /** A UUID. */
  id: string;
  type: NotificationType;
  title: string;
  message: string;
  /** An http(s) URL or a same-origin path; absent when the notification has none. */
  link?: string;
  /** RFC 3339, UTC. */
  timestamp: string;
  read: boolean;
  /** The publisher's own JSON object, exactly as given; absent when it sent none. */
  data?: { [key: string]: unknown };
  /** 1..64 characters of `a-z 0-9 . _ -`; absent when it has none. */
  category?: string;
  /** RFC 3339, UTC: when it expires (then `deleted` with reason `expired` follows). */
  expiresAt?: string;
  /** Present, and true, only while archived; history leaves archived ones out by default. */
  archived?: true;
  /** RFC 3339, UTC: when it was last updated; absent until an update. */
  updatedAt?: string;
}

/** A broadcast to everyone (`event: announcement`). */
export interface Announcement {
  id: string;
  type: 'info';
  title: string;
  message: string;
  timestamp: string;
}

/** Read state changed on another device (`event: read`). */
export type ReadChange = { ids: string[]; all?: undefined } | { all: true; ids?: undefined };

/**
 * Notifications removed (`event: deleted`): retracted by the publisher or dismissed by the user
 * (no `reason`), or past their `expiresAt` (`reason: 'expired'`). They are gone from history.
 */
export interface Deletion {
  ids: string[];
  reason?: 'expired';
}

/** Notifications archived or unarchived, on this device or another (`event: archived`). */
export interface ArchiveChange {
  ids: string[];
  archived: boolean;
}

/** The history asked for is gone (`event: resync`): refetch it; the stream goes on live. */
export interface Resync {
  reason: string;
  /** The oldest id still retained, or null when nothing is. */
  oldestId: string | null;
}

/** The stream's token reached its `exp` (`event: reauth`); the server then ends the stream. */
export interface Reauth {
  reason: string;
}

/** The first event of every stream (`event: connected`). */
export interface Connected {
  clientId: string;
}

interface EventPayloads {
  connected: Connected;
  notification: Notification;
  announcement: Announcement;
  read: ReadChange;
  updated: Notification;
  deleted: Deletion;
  archived: ArchiveChange;
  resync: Resync;
  reauth: Reauth;
}

/**
 * Every event as delivered to `onEvent`, with `data` parsed from JSON; switch on `type` to
 * narrow `data`. (These are all the types herald sends; another server's other types arrive
 * the same way, with `data` as parsed.)
 */
export type HeraldEvent = {
  [K in keyof EventPayloads]: { type: K; id: string | null; data: EventPayloads[K] };
}[keyof EventPayloads];

/** An event with an id, as passed to the typed callbacks next to its payload. */
export interface DeliveredEvent<T> {
  type: string;
  /**
   * The event's `id:` (herald sends one with every notification, announcement, read, updated,
   * deleted, archived and resync).
   */
  id: string | null;
  data: T;
}

/**
 * - `connecting`: the first attempt is under way.
 * - `open`: the server accepted the stream; events flow.
 * - `reconnecting`: the connection dropped or was refused for now; another attempt follows
 *   after `info.delayMs` (also reported on each new attempt).
 * - `closed`: for good: `close()`, a `reauth` without a fresh token, or a refusal such as 401.
 */
export type ConnectionState = 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface StateInfo {
  /** Failed attempts in a row (reconnecting). */
  attempt?: number;
  /** The wait before the next attempt, in milliseconds (reconnecting). */
  delayMs?: number;
  /** The HTTP status that refused the last attempt, if it got one. */
  status?: number | null;
  /** What went wrong, when something did. */
  error?: Error | null;
  /** Why the subscription closed or is reconnecting outside the backoff. */
  reason?: 'closed' | 'reauth' | 'error';
  /** The stream's URL (open). */
  url?: string;
}

/** An HTTP refusal or a stream failure. `body` is the server's JSON (`{"error": ...}`), if any. */
export class HeraldError extends Error {
  constructor(message: string, status?: number | null, body?: unknown);
  readonly name: 'HeraldError';
  readonly status: number | null;
  readonly body: unknown;
}

/** A token, or a function that gives the current one (called before every connection attempt). */
export type TokenSource = string | (() => string | Promise<string>);

/** What `onReauth` may hand back: a fresh token to go on with, or nothing to stop. */
export type ReauthResult = string | null | undefined | void;

export interface Backoff {
  /** The first retry's upper bound until the server sends `retry:` (which then wins). Default 1000. */
  baseMs?: number;
  /** The largest wait between attempts. Default 30000. */
  maxMs?: number;
}

/** Which stream to open: a full URL, a user's stream, or (with a token) `/events/me`. */
export type StreamTarget =
  | { url: string | URL; server?: undefined; user?: undefined }
  | { user: string; server?: string; url?: undefined }
  | { token: TokenSource; server?: string; url?: undefined; user?: undefined };

export interface SubscribeCallbacks {
  /** Every event, `connected` and unknown types included, before the typed callback. */
  onEvent?(event: HeraldEvent): void;
  onNotification?(notification: Notification, event: DeliveredEvent<Notification>): void;
  onAnnouncement?(announcement: Announcement, event: DeliveredEvent<Announcement>): void;
  onRead?(change: ReadChange, event: DeliveredEvent<ReadChange>): void;
  /** A notification was changed by its publisher: the whole new notification, same `id`. */
  onUpdate?(notification: Notification, event: DeliveredEvent<Notification>): void;
  /** Notifications were deleted, dismissed or expired: remove them. */
  onDelete?(deletion: Deletion, event: DeliveredEvent<Deletion>): void;
  onArchive?(change: ArchiveChange, event: DeliveredEvent<ArchiveChange>): void;
  /** History was lost for this client: refetch it. `lastEventId` already points past the gap. */
  onResync?(resync: Resync, event: DeliveredEvent<Resync>): void;
  /**
   * The token expired and the server ended the stream. Return (or resolve to) a fresh token to
   * go on from `lastEventId`; return nothing to close the subscription. Without `onReauth`, a
   * function `token` is simply called again.
   */
  onReauth?(reauth: Reauth): ReauthResult | Promise<ReauthResult>;
  onStateChange?(state: ConnectionState, info: StateInfo): void;
  /** The subscription stopped for good on an error: 401, 403, 400, 404 and the like. */
  onError?(error: HeraldError | Error): void;
}

export interface SubscribeCommon extends SubscribeCallbacks {
  /** Sent as `Authorization: Bearer` (fetch transport only). */
  token?: TokenSource;
  /** Where to start: replay everything after this id (e.g. history's `lastEventId`). */
  lastEventId?: string | number | null;
  /** `fetch` (default): headers, statuses and `retry:` are seen. `eventsource`: the browser's EventSource. */
  transport?: 'fetch' | 'eventsource';
  /** The fetch to use (fetch transport), e.g. one that adds headers. Default: globalThis.fetch. */
  fetch?: typeof fetch;
  backoff?: Backoff;
  /** Reconnect when nothing, not even a heartbeat, arrived for this long. Default 0 (off). */
  idleTimeoutMs?: number;
  /** Send cookies to another origin (credentials: 'include' / EventSource withCredentials). */
  withCredentials?: boolean;
}

export type SubscribeOptions = StreamTarget & SubscribeCommon;

export interface Subscription {
  /** Ends the subscription: closes the connection and stops reconnecting. */
  close(): void;
  /** The id of the last event delivered (or the starting id); reconnects go on from here. */
  readonly lastEventId: string | null;
  readonly state: ConnectionState | 'idle';
}

/** Opens a subscription; the connection starts right after this returns. */
export function subscribe(options: SubscribeOptions): Subscription;

export interface ParsedEvent {
  /** `message` when the event had no `event:` line. */
  type: string;
  /** The `data:` lines joined with "\n". */
  data: string;
  /** This event's own `id:`, or null. */
  id: string | null;
  /** The last id seen on the stream so far. */
  lastEventId: string;
}

export interface SseParserHandlers {
  onEvent?(event: ParsedEvent): void;
  onRetry?(milliseconds: number): void;
  onComment?(text: string): void;
}

/** An incremental `text/event-stream` parser (CR, LF and CRLF; multi-line data; comments; retry). */
export class SseParser {
  constructor(handlers?: SseParserHandlers);
  /** Feeds decoded text; complete events are dispatched at once. */
  push(text: string): void;
  /** The stream ended: drops an event that had no closing blank line. */
  end(): void;
  readonly lastEventId: string;
}

/** The wait before reconnect attempt `attempt` (from 1): uniform in [0, min(maxMs, baseMs·2^(attempt−1))). */
export function backoffDelay(attempt: number, baseMs: number, maxMs: number, random?: () => number): number;

// ---- Web Push (docs/protocol.md#web-push) ---------------------------------------------------

/**
 * Whose pushes this browser should get, and how to reach herald. The service worker that shows
 * them is herald's `/herald-sw.js`: it shows each one with the notification's `title`, its
 * `message` as the body, its `id` as the tag and an icon for its `type`; a click focuses an open
 * page of the site, else opens its `link`, else the page at `/`.
 */
export interface EnablePushOptions {
  /** The user whose notifications are pushed to this browser. */
  user: string;
  /** herald's base URL when it is not this page's origin. */
  server?: string;
  /** Sent as `Authorization: Bearer`; without it the requests carry this origin's cookies (`herald_token`). */
  token?: TokenSource;
  /** Send cookies to another origin (credentials: 'include'). */
  withCredentials?: boolean;
  /**
   * The service worker to register. Default `<server>/herald-sw.js`; a worker must be on the
   * page's own origin, so a web app on another origin serves one that imports herald's.
   */
  serviceWorker?: string | URL;
  /** The fetch to use. Default: globalThis.fetch. */
  fetch?: typeof fetch;
}

export interface DisablePushOptions {
  /** Sent as `Authorization: Bearer` with the deletion on the server. */
  token?: TokenSource;
  fetch?: typeof fetch;
}

/** This browser's push subscription, as enablePush() left it. */
export interface PushStatus {
  user: string;
  /** herald's base URL. */
  server: string;
  /**
   * herald's id of the subscription; null when the browser renewed it and herald has not
   * stored the new one yet (enablePush() again sends it).
   */
  id: string | null;
}

/**
 * Subscribes this browser to `user`'s pushes: asks for the notification permission (call it
 * from a click), registers the service worker, subscribes with the server's key and stores the
 * subscription on the server. Resolves with herald's id for it; rejects with a HeraldError when
 * the browser cannot do push, the permission is refused, push is off on the server (`status`
 * 404) or the server refuses the subscription (`status` and `body` are the server's).
 */
export function enablePush(options: EnablePushOptions): Promise<string>;

/**
 * Stops pushes to this browser: unsubscribes it and deletes the subscription on the server. If
 * the server cannot be told, the browser is unsubscribed all the same and the promise rejects;
 * calling it again tells the server.
 */
export function disablePush(options?: DisablePushOptions): Promise<void>;

/** Whether this browser gets pushes, and for whom; null when it does not. */
export function pushStatus(): Promise<PushStatus | null>;

declare const Herald: {
  readonly subscribe: typeof subscribe;
  readonly SseParser: typeof SseParser;
  readonly HeraldError: typeof HeraldError;
  readonly backoffDelay: typeof backoffDelay;
  readonly enablePush: typeof enablePush;
  readonly disablePush: typeof disablePush;
  readonly pushStatus: typeof pushStatus;
};
export default Herald;

declare global {
  /** Set by /herald.global.js, the classic-script build. */
  interface Window {
    Herald: typeof Herald;
  }
}
