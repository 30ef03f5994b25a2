//! The per-client publish rate (`--publish-rate N/s`): a GCRA limiter keyed by client address,
//! bursts of N, one budget for publishes and broadcasts, checked before auth and before the
//! body is read. Memory stays bounded: an entry whose bucket has refilled (at most 1 s + 1/N s
//! after its client's last request) is dropped by [`forget_quiet_clients`] every second.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};
use tokio_util::sync::CancellationToken;

use crate::app::AppState;
use crate::http::error::ApiError;

/// How often entries of clients whose budget has refilled are dropped.
pub const FORGET_EVERY: Duration = Duration::from_secs(1);

/// Publishes and broadcasts allowed per second and per client, in bursts of up to that many.
pub struct PublishLimiter {
    /// One GCRA state per client key (see [`client_key`]); a `DashMap` inside, so checks from
    /// many connections do not queue behind one lock.
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    rate: NonZeroU32,
}

impl std::fmt::Debug for PublishLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishLimiter")
            .field("rate", &self.rate)
            .field("clients", &self.limiter.len())
            .finish()
    }
}

impl PublishLimiter {
    pub fn per_second(rate: NonZeroU32) -> Self {
        Self {
            limiter: DefaultKeyedRateLimiter::keyed(Quota::per_second(rate)),
            rate,
        }
    }

    /// Takes one unit of `client`'s budget, or says how long until one is free.
    pub fn check(&self, client: IpAddr) -> Result<(), ApiError> {
        self.limiter
            .check_key(&client_key(client))
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                ApiError::TooMany {
                    message: format!(
                        "too many publishes from this address (at most {} per second); retry later",
                        self.rate
                    ),
                    retry_after: whole_seconds_at_least_one(wait),
                }
            })
    }

    /// Drops every client whose budget has refilled, and gives memory back after a flood.
    pub fn forget_quiet_clients(&self) {
        let before = self.limiter.len();
        self.limiter.retain_recent();
        // Shrinking reallocates the map: worth it only when most of it went away.
        if self.limiter.len() <= before / 2 {
            self.limiter.shrink_to_fit();
        }
    }

    /// How many clients the limiter holds state for.
    pub fn tracked_clients(&self) -> usize {
        self.limiter.len()
    }
}

/// Runs [`PublishLimiter::forget_quiet_clients`] every [`FORGET_EVERY`] until `stop`.
pub async fn forget_quiet_clients(limiter: Arc<PublishLimiter>, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(FORGET_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => limiter.forget_quiet_clients(),
        }
    }
}

/// Whom a budget belongs to: an IPv4 address (also when it arrives IPv4-mapped on a dual-stack
/// socket), or an IPv6 /64, since one host usually holds a whole /64 and could otherwise pick a
/// fresh address, and a fresh budget, for every request.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(network))
        }
        v4 => v4,
    }
}

/// `Retry-After` is in whole seconds; rounding down could tell a client to retry too early.
fn whole_seconds_at_least_one(wait: Duration) -> u64 {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    seconds.max(1)
}

/// Admits a publish or broadcast while its client is within `--publish-rate` (and always when
/// there is no such limit); otherwise `429` with `Retry-After`.
pub struct WithinPublishRate;

impl FromRequestParts<AppState> for WithinPublishRate {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(limiter) = &state.publish_limiter else {
            return Ok(Self);
        };
        // The accept loop gives every request its peer address. A router driven without it
        // (an embedder's own server) puts all its callers in one budget rather than none.
        let client = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ConnectInfo(peer)| {
                peer.ip()
            });
        limiter.check(client)?;
        Ok(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).expect("non-zero")
    }

    fn retry_after(error: ApiError) -> u64 {
        match error {
            ApiError::TooMany { retry_after, .. } => retry_after,
            other => panic!("expected TooMany, got {other:?}"),
        }
    }

    #[test]
    fn a_burst_of_n_passes_and_the_next_waits_at_least_a_second() {
        let limiter = PublishLimiter::per_second(rate(5));
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..5 {
            limiter.check(client).expect("within the burst");
        }
        let refused = limiter.check(client).expect_err("over the burst");
        assert_eq!(retry_after(refused), 1);
        // Another client has a budget of its own.
        limiter
            .check("192.0.2.2".parse().unwrap())
            .expect("another client");
    }

    #[test]
    fn a_slow_rate_asks_for_a_longer_wait_in_whole_seconds() {
        assert_eq!(whole_seconds_at_least_one(Duration::ZERO), 1);
        assert_eq!(whole_seconds_at_least_one(Duration::from_millis(200)), 1);
        assert_eq!(whole_seconds_at_least_one(Duration::from_millis(1001)), 2);
        assert_eq!(whole_seconds_at_least_one(Duration::from_secs(3)), 3);
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64_and_mapped_ipv4_as_ipv4() {
        let key = |raw: &str| client_key(raw.parse().unwrap());
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_eq!(key("192.0.2.7").to_string(), "192.0.2.7");
    }

    #[test]
    fn clients_whose_budget_has_refilled_are_forgotten() {
        // At 1000/s a bucket refills within a millisecond or two.
        let limiter = PublishLimiter::per_second(rate(1000));
        for n in 0..200u32 {
            limiter
                .check(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n)))
                .expect("first request");
        }
        assert_eq!(limiter.tracked_clients(), 200);
        std::thread::sleep(Duration::from_millis(20));
        limiter.forget_quiet_clients();
        assert_eq!(limiter.tracked_clients(), 0);
    }
}
