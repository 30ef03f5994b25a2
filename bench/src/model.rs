//! `herald-bench model`: the capacity model of docs/scaling.md, section 2, for today's cluster
//! design (every node on one Redis, every node reading the whole log), and the simulation of
//! section 4 for design C of section 3 (histories on PostgreSQL, the live log in K shard
//! streams, each node following only its shard). It measures nothing: it multiplies the unit
//! costs measured by `bench/scripts/unit-costs.sh` and the other scripts (the constants below,
//! each with where it comes from) by a size, and prints, per part, the CPU, memory and network
//! it needs and which part runs out first.

use std::fmt::Write as _;

/// One size of deployment.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    pub name: &'static str,
    pub users: f64,
    pub streams: f64,
    /// Publishes to one user each, per second.
    pub publishes_per_s: f64,
    pub broadcasts_per_s: f64,
    /// Notifications kept per user (`--history-limit`), all histories assumed full.
    pub history: f64,
}

/// The three sizes of issue 17, at the default history limit.
pub const SIZES: [Size; 3] = [
    Size {
        name: "startup",
        users: 100e3,
        streams: 10e3,
        publishes_per_s: 100.0,
        broadcasts_per_s: 0.01,
        history: 100.0,
    },
    Size {
        name: "large product",
        users: 10e6,
        streams: 1e6,
        publishes_per_s: 10e3,
        broadcasts_per_s: 0.1,
        history: 100.0,
    },
    Size {
        name: "internet scale",
        users: 100e6,
        streams: 10e6,
        publishes_per_s: 100e3,
        broadcasts_per_s: 1.0,
        history: 100.0,
    },
];

/// Measured unit costs (docs/scaling.md, section 1; BENCHMARKS.md).
pub mod costs {
    /// Redis script time of a publish to one user at history limit 100, µs.
    pub const REDIS_PUBLISH_US: f64 = 31.0;
    /// Redis script time of a broadcast at history limit 100, µs.
    pub const REDIS_BROADCAST_US: f64 = 38.0;
    /// Redis memory of the history keys per stored notification (limit 100, what `DEL` frees).
    pub const REDIS_HISTORY_BYTES: f64 = 482.0;
    /// Redis memory per retained event: its per-user stream entry and its log entry.
    pub const REDIS_EVENT_BYTES: f64 = 331.0 + 319.0;
    /// A node's CPU following the shared log, for events that concern none of its streams:
    /// 0.070 cores at 1,000 events/s and 0.124 at 3,000/s, measured in one sitting. Reads
    /// batch more events as the rate grows, so past 1,000/s an event costs its marginal 27 µs
    /// (docs/scaling.md, "Following the shared log").
    pub const FOLLOW_LOW_RATE: f64 = 1_000.0;
    pub const FOLLOW_LOW_US: f64 = 70.0;
    pub const FOLLOW_MARGINAL_US: f64 = (124_000.0 - 70_000.0) / 2_000.0;

    /// A node's cores following `events_per_s` of the log.
    pub fn follow_cores(events_per_s: f64) -> f64 {
        let low = events_per_s.min(FOLLOW_LOW_RATE) * FOLLOW_LOW_US;
        let more = (events_per_s - FOLLOW_LOW_RATE).max(0.0) * FOLLOW_MARGINAL_US;
        (low + more) / 1e6
    }

    /// The events per second a node follows within `cores` (the inverse of [`follow_cores`]).
    pub fn follow_rate_within(cores: f64) -> f64 {
        let low_cores = FOLLOW_LOW_RATE * FOLLOW_LOW_US / 1e6;
        if cores <= low_cores {
            cores * 1e6 / FOLLOW_LOW_US
        } else {
            FOLLOW_LOW_RATE + (cores - low_cores) * 1e6 / FOLLOW_MARGINAL_US
        }
    }
    /// A node's CPU per delivery of one event to one stream, µs: 5.9 s of server CPU for
    /// 50 broadcasts to 15,000 streams (BENCHMARKS.md, "Issue 16, second step").
    pub const DELIVERY_US: f64 = 5.9e6 / (50.0 * 15_000.0);
    /// RSS per idle stream over TLS 1.3 HTTP/1.1, bytes (3.20 KiB).
    pub const STREAM_BYTES: f64 = 3.20 * 1024.0;
    /// Streams one node process holds: 19,000 held with none failing under a 20,000-file
    /// limit; the model plans 15,000 per 2-core node, the size every fan-out figure was taken at.
    pub const STREAMS_PER_NODE: f64 = 15_000.0;
    /// Cores of one node.
    pub const NODE_CORES: f64 = 2.0;
    /// Bytes a node reads from Redis per event of the log (a log entry's size in memory, as an
    /// estimate of its size on the wire).
    pub const LOG_ENTRY_WIRE_BYTES: f64 = 319.0;
    /// Events the log and the per-user streams retain (`--retention-events`, default).
    pub const RETAINED_EVENTS: f64 = 1e6;
    /// What one Redis primary offers: one core for scripts, and the memory of a large machine.
    pub const REDIS_CORES: f64 = 1.0;
    pub const REDIS_MEMORY_BYTES: f64 = 256.0 * (1u64 << 30) as f64;
    /// PostgreSQL's disk per stored notification, its event and its history row with their
    /// indexes (`bench/scripts/postgres-costs.sh`).
    pub const SQL_BYTES_PER_NOTIFICATION: f64 = 636.0;
    /// Durable publishes (an event and its notification) one 2-core PostgreSQL primary took,
    /// 32 clients each committing 16 at a time as herald's writer groups them, with pgbench on
    /// the same cores (same script; one per transaction took 5,248/s in that sitting).
    pub const SQL_ROWS_PER_S_PER_PRIMARY: f64 = 28_712.0;
    /// Design C picks the fewest shards (a power of two) that keep each shard's scripts under
    /// half a core and each node's following under a tenth of its cores.
    pub const SHARD_SCRIPT_CORES: f64 = 0.5;
    pub const NODE_FOLLOW_SHARE: f64 = 0.1;
}

/// What one size needs under design C (docs/scaling.md, section 3).
#[derive(Debug, Clone, Copy)]
pub struct ShardedNeeds {
    pub shards: f64,
    pub nodes: f64,
    /// Each node follows its own shard's events and every broadcast.
    pub node_follow_cores: f64,
    pub node_delivery_cores: f64,
    pub node_log_bytes_per_s: f64,
    pub redis_egress_bytes_per_s: f64,
    /// Per shard primary: its users' publishes, and every broadcast written to every shard.
    pub shard_redis_cores: f64,
    /// Per shard: the retained events only (histories are in PostgreSQL).
    pub shard_redis_memory_bytes: f64,
    pub sql_rows_per_s: f64,
    /// 2-core PostgreSQL primaries for that write rate, histories partitioned by user.
    pub sql_primaries: f64,
    pub sql_disk_bytes: f64,
}

impl ShardedNeeds {
    pub fn of(size: &Size) -> Self {
        use costs::*;
        let today = Needs::of(size);
        let for_scripts = size.publishes_per_s * REDIS_PUBLISH_US / 1e6 / SHARD_SCRIPT_CORES;
        let for_following =
            size.publishes_per_s / follow_rate_within(NODE_FOLLOW_SHARE * NODE_CORES);
        let shards = for_scripts
            .max(for_following)
            .max(1.0)
            .log2()
            .ceil()
            .exp2()
            .min(today.nodes.max(1.0));
        let node_events_per_s = size.publishes_per_s / shards + size.broadcasts_per_s;
        let retained =
            RETAINED_EVENTS.min((size.publishes_per_s + size.broadcasts_per_s) * 86_400.0);
        Self {
            shards,
            nodes: today.nodes,
            node_follow_cores: follow_cores(node_events_per_s),
            node_delivery_cores: today.node_delivery_cores,
            node_log_bytes_per_s: node_events_per_s * LOG_ENTRY_WIRE_BYTES,
            redis_egress_bytes_per_s: today.nodes * node_events_per_s * LOG_ENTRY_WIRE_BYTES,
            shard_redis_cores: (size.publishes_per_s / shards * REDIS_PUBLISH_US
                + size.broadcasts_per_s * REDIS_BROADCAST_US)
                / 1e6,
            shard_redis_memory_bytes: (retained / shards + size.broadcasts_per_s * 86_400.0)
                .min(RETAINED_EVENTS)
                * REDIS_EVENT_BYTES,
            sql_rows_per_s: size.publishes_per_s + size.broadcasts_per_s,
            sql_primaries: ((size.publishes_per_s + size.broadcasts_per_s)
                / SQL_ROWS_PER_S_PER_PRIMARY)
                .ceil()
                .max(1.0),
            sql_disk_bytes: size.users * size.history * SQL_BYTES_PER_NOTIFICATION,
        }
    }
}

/// What one size needs, part by part.
#[derive(Debug, Clone, Copy)]
pub struct Needs {
    pub nodes: f64,
    /// Each node's cores spent following the log (all events) and delivering its share.
    pub node_follow_cores: f64,
    pub node_delivery_cores: f64,
    pub node_memory_bytes: f64,
    /// Bytes per second each node reads from Redis; and Redis sends, all nodes together.
    pub node_log_bytes_per_s: f64,
    pub redis_egress_bytes_per_s: f64,
    pub redis_cores: f64,
    pub redis_memory_bytes: f64,
}

impl Needs {
    pub fn of(size: &Size) -> Self {
        use costs::*;
        let events_per_s = size.publishes_per_s + size.broadcasts_per_s;
        let nodes = (size.streams / STREAMS_PER_NODE).ceil().max(1.0);
        // A publish reaches its user's streams (streams / users of them on average); a
        // broadcast every stream. Spread evenly over the nodes.
        let deliveries_per_s = size.publishes_per_s * (size.streams / size.users)
            + size.broadcasts_per_s * size.streams;
        let stored = size.users * size.history;
        let retained = RETAINED_EVENTS.min(events_per_s * 86_400.0);
        Self {
            nodes,
            node_follow_cores: follow_cores(events_per_s),
            node_delivery_cores: deliveries_per_s / nodes * DELIVERY_US / 1e6,
            node_memory_bytes: size.streams / nodes * STREAM_BYTES,
            node_log_bytes_per_s: events_per_s * LOG_ENTRY_WIRE_BYTES,
            redis_egress_bytes_per_s: nodes * events_per_s * LOG_ENTRY_WIRE_BYTES,
            redis_cores: (size.publishes_per_s * REDIS_PUBLISH_US
                + size.broadcasts_per_s * REDIS_BROADCAST_US)
                / 1e6,
            redis_memory_bytes: stored * REDIS_HISTORY_BYTES + retained * REDIS_EVENT_BYTES,
        }
    }

    /// The parts over their limit, the fullest first, each with how full it is.
    pub fn saturated(&self) -> Vec<(&'static str, f64)> {
        use costs::*;
        let mut parts = vec![
            (
                "each node's cores",
                (self.node_follow_cores + self.node_delivery_cores) / NODE_CORES,
            ),
            ("Redis's core (its scripts)", self.redis_cores / REDIS_CORES),
            (
                "Redis's memory",
                self.redis_memory_bytes / REDIS_MEMORY_BYTES,
            ),
        ];
        parts.retain(|(_, load)| *load > 1.0);
        parts.sort_by(|a, b| b.1.total_cmp(&a.1));
        parts
    }
}

/// The simulation's table for design C, in markdown.
pub fn sharded_table(sizes: &[Size]) -> String {
    let mut out = String::from(
        "| | shards | nodes | node cores: following + delivering | log read per node | Redis egress | Redis cores per shard | Redis memory per shard | PostgreSQL rows/s | PostgreSQL primaries | PostgreSQL disk |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for size in sizes {
        let needs = ShardedNeeds::of(size);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.2} + {:.2} | {}/s | {}/s | {:.2} | {} | {} | {} | {} |",
            size.name,
            needs.shards,
            needs.nodes,
            needs.node_follow_cores,
            needs.node_delivery_cores,
            bytes(needs.node_log_bytes_per_s),
            bytes(needs.redis_egress_bytes_per_s),
            needs.shard_redis_cores,
            bytes(needs.shard_redis_memory_bytes),
            count(needs.sql_rows_per_s),
            needs.sql_primaries,
            bytes(needs.sql_disk_bytes),
        );
    }
    out
}

/// The model's table for `sizes`, in markdown.
pub fn table(sizes: &[Size]) -> String {
    let mut out = String::from(
        "| | nodes | node cores: following + delivering | node memory | log read per node | Redis egress | Redis cores | Redis memory | runs out first |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for size in sizes {
        let needs = Needs::of(size);
        let first = needs
            .saturated()
            .first()
            .map_or("nothing".to_owned(), |(part, load)| {
                format!("{part} ({load:.1}x)")
            });
        let _ = writeln!(
            out,
            "| {} ({} users, {} streams, {}/s) | {} | {:.2} + {:.2} | {} | {}/s | {}/s | {:.2} | {} | {} |",
            size.name,
            count(size.users),
            count(size.streams),
            count(size.publishes_per_s),
            needs.nodes,
            needs.node_follow_cores,
            needs.node_delivery_cores,
            bytes(needs.node_memory_bytes),
            bytes(needs.node_log_bytes_per_s),
            bytes(needs.redis_egress_bytes_per_s),
            needs.redis_cores,
            bytes(needs.redis_memory_bytes),
            first,
        );
    }
    out
}

/// A count as the tables show it, rounded: `100`, `10k`, `1M`.
fn count(n: f64) -> String {
    match n {
        n if n >= 1e6 => format!("{:.0}M", n / 1e6),
        n if n >= 1e3 => format!("{:.0}k", n / 1e3),
        n => format!("{n:.0}"),
    }
}

fn bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = n;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_startup_fits_one_node_and_nothing_runs_out() {
        let needs = Needs::of(&SIZES[0]);
        assert_eq!(needs.nodes, 1.0);
        // 100 publishes/s: 3.1 ms of Redis scripts per second.
        assert!((needs.redis_cores - 0.0031).abs() < 1e-4, "{needs:?}");
        assert!(needs.saturated().is_empty(), "{needs:?}");
    }

    #[test]
    fn the_large_product_runs_out_of_redis_memory_for_histories_first() {
        let needs = Needs::of(&SIZES[1]);
        assert_eq!(needs.nodes, 67.0);
        // 10M users x 100 x 482 B, plus a million retained events x 650 B.
        assert_eq!(needs.redis_memory_bytes, 10e6 * 100.0 * 482.0 + 1e6 * 650.0);
        let saturated = needs.saturated();
        assert_eq!(saturated.len(), 1, "{saturated:?}");
        assert_eq!(saturated[0].0, "Redis's memory");
    }

    #[test]
    fn at_internet_scale_a_node_cannot_even_follow_the_log_and_redis_runs_out_of_everything() {
        let needs = Needs::of(&SIZES[2]);
        // 1,000 events/s x 70 us + 99,000 x 27 us: 2.74 cores per node just to read the log.
        assert!((needs.node_follow_cores - 2.743).abs() < 0.001, "{needs:?}");
        let parts: Vec<&str> = needs.saturated().iter().map(|(part, _)| *part).collect();
        assert_eq!(
            parts,
            [
                "Redis's memory",
                "Redis's core (its scripts)",
                "each node's cores"
            ]
        );
    }

    #[test]
    fn design_c_shards_the_internet_scale_so_a_node_follows_a_fraction_of_the_log() {
        let needs = ShardedNeeds::of(&SIZES[2]);
        // 100,000/s x 31 us / 0.5 core = 6.2 shards for the scripts; 0.2 cores follow
        // 5,815 events/s, so 17.2 for following: 32, a power of two.
        assert_eq!(needs.shards, 32.0);
        assert!(needs.node_follow_cores < 0.2, "{needs:?}");
        assert!(needs.shard_redis_cores < 0.5, "{needs:?}");
        assert_eq!(needs.sql_disk_bytes, 100e6 * 100.0 * 636.0);
        // 100,001 rows/s at 28,712 per primary.
        assert_eq!(needs.sql_primaries, 4.0);
        // The large product: 10,000/s over 5,815 per node is 1.7, so 2 shards.
        assert_eq!(ShardedNeeds::of(&SIZES[1]).shards, 2.0);
        // The startup stays one shard, as today.
        assert_eq!(ShardedNeeds::of(&SIZES[0]).shards, 1.0);
    }

    #[test]
    fn following_costs_70_us_an_event_up_to_1000_per_s_and_27_us_past_it() {
        assert!((costs::follow_cores(1_000.0) - 0.070).abs() < 1e-9);
        assert!((costs::follow_cores(3_000.0) - 0.124).abs() < 1e-9);
        for rate in [10.0, 1_000.0, 5_000.0, 100_000.0] {
            let back = costs::follow_rate_within(costs::follow_cores(rate));
            assert!((back - rate).abs() < 1e-6, "{rate} came back as {back}");
        }
    }

    #[test]
    fn the_table_has_a_row_per_size_naming_what_runs_out() {
        let table = table(&SIZES);
        assert_eq!(table.lines().count(), 2 + SIZES.len());
        assert!(table.contains("| startup (100k users, 10k streams, 100/s) | 1 |"));
        assert!(table.lines().nth(2).unwrap().ends_with("| nothing |"));
    }
}
