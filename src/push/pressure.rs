//! How busy publishing is, as the pusher sees it: the publishes being answered right now. The
//! publish routes count themselves in; while many are in flight the pusher starts pushes at a
//! slower pace, so a burst of publishes is not slowed by pushes (docs/protocol.md#web-push,
//! BENCHMARKS.md#web-push).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Publishes in flight at or above this count make a burst.
const BURST: usize = 4;

/// Publishes being answered now; cheap to clone.
#[derive(Clone, Default)]
pub struct Publishing(Arc<AtomicUsize>);

impl Publishing {
    /// Counts one publish in until the guard is dropped (answered, failed or cancelled).
    pub fn enter(&self) -> InFlight {
        self.0.fetch_add(1, Ordering::Relaxed);
        InFlight(self.0.clone())
    }

    /// Whether publishes are coming in a burst now.
    pub fn in_burst(&self) -> bool {
        self.0.load(Ordering::Relaxed) >= BURST
    }
}

/// One publish being answered.
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_four_publishes_in_flight_and_ends_as_they_are_answered() {
        let publishing = Publishing::default();
        let mut guards: Vec<InFlight> = (0..BURST - 1).map(|_| publishing.enter()).collect();
        assert!(!publishing.in_burst());
        guards.push(publishing.enter());
        assert!(publishing.in_burst());
        guards.pop();
        assert!(!publishing.in_burst());
        drop(guards);
        assert_eq!(publishing.0.load(Ordering::Relaxed), 0);
    }
}
