//! The node's Prometheus metrics, in a registry of its own (so several servers in one test
//! process never mix their figures), rendered as text for `GET /metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub struct Metrics {
    registry: Registry,
    /// Open SSE streams on this node.
    pub streams: Gauge,
    /// `--max-connections`, set once at start, so a dashboard or an alert can compare
    /// `streams` with it.
    pub max_streams: Gauge,
    /// 1 while the store (SQLite, or Redis in cluster mode) is healthy, else 0: the store's half
    /// of `/readyz`, set each time `/metrics` is read.
    pub store_healthy: Gauge,
    /// Notifications, announcements and read events appended to the log by this node.
    pub events_published: Counter,
    /// Events this node's hub dispatched to its streams (each once, however many streams).
    pub events_dispatched: Counter,
    /// Frames queued for streams: one event sent to three streams counts three.
    pub events_delivered: Counter,
    /// Streams closed because their queue was full.
    pub slow_reader_closes: Counter,
    /// Events sent from the log to reconnecting streams.
    pub events_replayed: Counter,
    /// Streams told to resync because what they asked for is gone.
    pub resyncs: Counter,
    /// Streams refused for the node's or a user's limit.
    pub streams_refused: Counter,
    /// Time from a publish request's arrival to its durable commit and dispatch.
    pub publish_latency: Histogram,
    /// Time each retention sweep took, from asking the store to its answer.
    pub retention_sweep: Histogram,
    /// TCP connections accepted, before any TLS handshake: with HTTP/2 many streams share one.
    pub connections_accepted: Counter,
    /// TCP connections open now (streams, API calls, idle keep-alives, handshakes).
    pub connections_open: Gauge,
    /// Connections closed as they arrived because `--max-open-connections` were open.
    pub connections_refused: Counter,
    /// Failed accepts (a full file table, usually).
    pub accept_failures: Counter,
    /// Web Push messages a push service accepted.
    pub pushes_sent: Counter,
    /// Web Push messages given up on (refused, or still failing when their TTL ran out).
    pub pushes_failed: Counter,
    /// Subscriptions deleted because their push service no longer knew them (404/410).
    pub push_subscriptions_removed: Counter,
    /// Pushes owed and not yet made, as the pusher last counted them.
    pub push_queue_depth: Gauge,
}

impl Metrics {
    // One flat list of registrations, a few lines each: splitting it would only scatter the
    // names and help texts that belong together.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("herald");
        let streams = Gauge::default();
        registry.register("streams", "Open SSE streams on this node", streams.clone());
        let max_streams = Gauge::default();
        registry.register(
            "max_streams",
            "Streams this node accepts (--max-connections)",
            max_streams.clone(),
        );
        let store_healthy = Gauge::default();
        registry.register(
            "store_healthy",
            "1 while the store (SQLite, or Redis in cluster mode) is healthy, else 0",
            store_healthy.clone(),
        );
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let counter = Counter::default();
            registry.register(name, help, counter.clone());
            counter
        };
        let events_published = counter(
            &mut registry,
            "events_published",
            "Events appended to the log through this node",
        );
        let events_dispatched = counter(
            &mut registry,
            "events_dispatched",
            "Events dispatched to this node's streams, each counted once",
        );
        let events_delivered = counter(
            &mut registry,
            "events_delivered",
            "Event frames queued for streams, one per receiving stream",
        );
        let slow_reader_closes = counter(
            &mut registry,
            "slow_reader_closes",
            "Streams closed because their queue was full",
        );
        let events_replayed = counter(
            &mut registry,
            "events_replayed",
            "Events replayed from the log to reconnecting streams",
        );
        let resyncs = counter(
            &mut registry,
            "resyncs",
            "Streams told to resync because the events they asked for are gone",
        );
        let streams_refused = counter(
            &mut registry,
            "streams_refused",
            "Stream requests refused for the node's or a user's connection limit",
        );
        let connections_accepted = counter(
            &mut registry,
            "connections_accepted",
            "TCP connections accepted",
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "TCP connections open now",
            connections_open.clone(),
        );
        let connections_refused = counter(
            &mut registry,
            "connections_refused",
            "Connections closed on arrival because --max-open-connections were open",
        );
        let accept_failures = counter(
            &mut registry,
            "accept_failures",
            "Failed accepts, usually a full file table",
        );
        let pushes_sent = counter(
            &mut registry,
            "pushes_sent",
            "Web Push messages a push service accepted",
        );
        let pushes_failed = counter(
            &mut registry,
            "pushes_failed",
            "Web Push messages given up on: refused, or failing until their TTL ran out",
        );
        let push_subscriptions_removed = counter(
            &mut registry,
            "push_subscriptions_removed",
            "Push subscriptions deleted because their push service answered 404 or 410",
        );
        let push_queue_depth = Gauge::default();
        registry.register(
            "push_queue_depth",
            "Web Push messages owed and not yet made",
            push_queue_depth.clone(),
        );
        let publish_latency = Histogram::new([
            0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        ]);
        registry.register(
            "publish_latency_seconds",
            "Time from a publish request to its durable commit and dispatch",
            publish_latency.clone(),
        );
        let retention_sweep =
            Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0]);
        registry.register(
            "retention_sweep_seconds",
            "Time a retention sweep took (on SQLite, publishes wait for it)",
            retention_sweep.clone(),
        );
        Self {
            registry,
            streams,
            max_streams,
            store_healthy,
            events_published,
            events_dispatched,
            events_delivered,
            slow_reader_closes,
            events_replayed,
            resyncs,
            streams_refused,
            publish_latency,
            retention_sweep,
            connections_accepted,
            connections_open,
            connections_refused,
            accept_failures,
            pushes_sent,
            pushes_failed,
            push_subscriptions_removed,
            push_queue_depth,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
