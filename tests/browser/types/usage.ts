// Compiled (never run) by types.test.mjs against web/herald.d.ts: the uses a web app would
// write type-check, and the mistakes marked @ts-expect-error are caught (an expectation that no
// longer fails is itself an error).

import Herald, {
  subscribe, backoffDelay, HeraldError, SseParser, enablePush, disablePush, pushStatus,
  type Notification, type HeraldEvent, type ConnectionState, type Subscription,
  type Deletion, type ArchiveChange,
} from '../../../web/herald.js';

const shown: Notification[] = [];
let state: ConnectionState = 'connecting';

const sub: Subscription = subscribe({
  user: 'alice',
  server: 'https://herald.example.com',
  lastEventId: '42',
  backoff: { baseMs: 500, maxMs: 20_000 },
  onNotification(n, event) {
    shown.push(n);
    const kind: 'info' | 'success' | 'warning' | 'error' = n.type;
    const link: string | undefined = n.link;
    const id: string | null = event.id;
    void kind; void link; void id;
  },
  onAnnouncement(a) { const t: 'info' = a.type; void t; },
  onRead(change) {
    if (change.all) return;
    const ids: string[] = change.ids;
    void ids;
  },
  onUpdate(n, event) {
    const i = shown.findIndex((m) => m.id === n.id);
    if (i !== -1) shown[i] = n;
    const edited: string | undefined = n.updatedAt;
    const category: string | undefined = n.category;
    const data: { [key: string]: unknown } | undefined = n.data;
    const id: string | null = event.id;
    void edited; void category; void data; void id;
  },
  onDelete(d: Deletion) {
    const expired: boolean = d.reason === 'expired';
    for (const id of d.ids) shown.splice(shown.findIndex((m) => m.id === id), 1);
    void expired;
  },
  onArchive(change: ArchiveChange, event) {
    const archived: boolean = change.archived;
    const ids: string[] = event.data.ids;
    void archived; void ids;
  },
  onResync(r) { const oldest: string | null = r.oldestId; void oldest; },
  onStateChange(next, info) { state = next; void info.delayMs; },
  onError(err) { if (err instanceof HeraldError) void err.status; },
  onEvent(event: HeraldEvent) {
    if (event.type === 'notification') {
      const title: string = event.data.title;
      void title;
    } else if (event.type === 'updated') {
      const expires: string | undefined = event.data.expiresAt;
      const archived: true | undefined = event.data.archived;
      void expires; void archived;
    } else if (event.type === 'deleted') {
      const ids: string[] = event.data.ids;
      void ids;
    } else if (event.type === 'archived') {
      const archived: boolean = event.data.archived;
      void archived;
    }
  },
});
const last: string | null = sub.lastEventId;
void last;
sub.close();

// /events/me with a token that is refreshed on expiry.
subscribe({
  token: async () => 'jwt',
  onReauth: async () => 'fresh-jwt',
});
subscribe({ url: new URL('https://h.example/events/bob'), transport: 'eventsource', withCredentials: true });

const delay: number = backoffDelay(3, 1000, 30_000, Math.random);
const parser = new SseParser({ onEvent: (e) => void e.data, onRetry: (ms) => void ms });
parser.push('data: x\n\n');
Herald.subscribe({ user: 'carol' });
window.Herald.subscribe({ user: 'dave' });
void delay; void state;

// Web Push: a switch that turns it on from a click, and off again.
async function onSwitch(on: boolean, token: string): Promise<string | null> {
  if (!on) {
    await disablePush({ token });
    return null;
  }
  try {
    const id: string = await enablePush({ user: 'alice', token, server: 'https://herald.example.com' });
    return id;
  } catch (err) {
    if (err instanceof HeraldError && err.status === 404) return null; // push is off there
    throw err;
  }
}
void onSwitch;
void enablePush({ user: 'bob', token: async () => 'jwt', serviceWorker: new URL('/sw.js', 'https://app.example'), withCredentials: true });
void disablePush();
void pushStatus().then((status) => {
  if (status === null) return;
  const user: string = status.user;
  const id: string | null = status.id;
  void user; void id;
});
void Herald.enablePush({ user: 'carol' });
void window.Herald.pushStatus();

// @ts-expect-error: enablePush needs the user whose notifications to push
enablePush({ token: 't' });
// @ts-expect-error: it resolves with herald's id, not the browser's PushSubscription
enablePush({ user: 'a' }).then((id) => id.endpoint);
// @ts-expect-error: a status's id may be null (a renewal the server has not stored yet)
pushStatus().then((s) => { if (s) { const id: string = s.id; void id; } });

// @ts-expect-error: a subscription needs a url, a user or a token
subscribe({});
// @ts-expect-error: a user's stream and a full URL at once is ambiguous
subscribe({ user: 'a', url: '/events/b' });
// @ts-expect-error: no such transport
subscribe({ user: 'a', transport: 'websocket' });
// @ts-expect-error: ids are strings
subscribe({ user: 'a', onRead: (change) => { if (!change.all) { const n: number[] = change.ids; void n; } } });
// @ts-expect-error: onReauth hands back a token string, not a number
subscribe({ token: 't', onReauth: () => 42 });
// @ts-expect-error: notifications have no `body`
subscribe({ user: 'a', onNotification: (n) => n.body });
// @ts-expect-error: a deletion's reason is 'expired' or absent
subscribe({ user: 'a', onDelete: (d) => d.reason === 'retracted' });
// @ts-expect-error: an archive change names its ids, not one id
subscribe({ user: 'a', onArchive: (c) => c.id });
// @ts-expect-error: a category is a string
subscribe({ user: 'a', onUpdate: (n) => { const c: number | undefined = n.category; void c; } });
