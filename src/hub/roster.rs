//! Every open stream of the hub in admission order, kept in shared slices of at most [`SLICE`]
//! streams. A broadcast takes the whole roster by cloning one reference a slice (about 120 at
//! 15,000 streams) where a list of its own took one reference a stream: each of those is a
//! locked increment of a count in memory not in cache, and together they held the hub's lock
//! for a millisecond before the first write (docs/architecture.md#fan-out). A slice that a
//! queued job still holds is copied when the hub changes it, so the job keeps the streams it was
//! given.

use std::sync::Arc;

use crate::sse::outbox::Outbox;

/// The most streams in a slice: a delivery thread's claim, about a millisecond of writes.
pub const SLICE: usize = 128;

/// Streams in admission order, shared by the roster and the jobs that took it.
pub type Slice = Arc<Vec<Arc<Outbox>>>;

#[derive(Default)]
pub struct Roster {
    /// None empty; stream ids increase along each slice and from one slice to the next.
    slices: Vec<Slice>,
}

impl Roster {
    /// Adds a stream admitted after every stream here (its id is larger).
    pub fn insert(&mut self, outbox: Arc<Outbox>) {
        debug_assert!(
            self.slices
                .last()
                .and_then(|slice| slice.last())
                .is_none_or(|last| last.stream_id < outbox.stream_id),
            "streams join in admission order"
        );
        match self.slices.last_mut() {
            Some(last) if last.len() < SLICE => Arc::make_mut(last).push(outbox),
            _ => self.slices.push(Arc::new(vec![outbox])),
        }
    }

    /// Takes the stream with this id out, if it is here. A slice left with under a quarter of
    /// [`SLICE`] joins a neighbour it fits with, so that slices stay about full however streams
    /// come and go.
    pub fn remove(&mut self, stream_id: u64) {
        let after = self
            .slices
            .partition_point(|slice| slice[0].stream_id <= stream_id);
        let Some(at) = after.checked_sub(1) else {
            return;
        };
        let Ok(place) = self.slices[at].binary_search_by_key(&stream_id, |o| o.stream_id) else {
            return;
        };
        Arc::make_mut(&mut self.slices[at]).remove(place);
        let left = self.slices[at].len();
        if left == 0 {
            self.slices.remove(at);
        } else if left < SLICE / 4 {
            if at > 0 && self.slices[at - 1].len() + left <= SLICE {
                self.join(at - 1);
            } else if self
                .slices
                .get(at + 1)
                .is_some_and(|next| left + next.len() <= SLICE)
            {
                self.join(at);
            }
        }
    }

    /// Moves the streams of the slice after `at` to the end of `at`'s.
    fn join(&mut self, at: usize) {
        let next = self.slices.remove(at + 1);
        Arc::make_mut(&mut self.slices[at]).extend(next.iter().cloned());
    }

    /// Every stream, as the slices a job can hold: a reference a slice.
    pub fn slices(&self) -> Vec<Slice> {
        self.slices.clone()
    }

    /// Every stream, in admission order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Outbox>> {
        self.slices.iter().flat_map(|slice| slice.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(slices: &[Slice]) -> Vec<Vec<u64>> {
        slices
            .iter()
            .map(|slice| slice.iter().map(|o| o.stream_id).collect())
            .collect()
    }

    fn roster(streams: u64) -> Roster {
        let mut roster = Roster::default();
        for id in 1..=streams {
            roster.insert(Arc::new(Outbox::new(id)));
        }
        roster
    }

    #[test]
    fn streams_fill_slices_in_admission_order() {
        let roster = roster(300);
        let slices = roster.slices();
        assert_eq!(
            slices.iter().map(|s| s.len()).collect::<Vec<_>>(),
            [128, 128, 44]
        );
        let all: Vec<u64> = roster.iter().map(|o| o.stream_id).collect();
        assert_eq!(all, (1..=300).collect::<Vec<_>>());
        assert_eq!(ids(&slices).concat(), all);
    }

    #[test]
    fn a_job_s_slices_keep_their_streams_while_the_roster_changes() {
        let mut roster = roster(200);
        let taken = roster.slices();
        roster.remove(5);
        roster.remove(150);
        roster.insert(Arc::new(Outbox::new(201)));
        assert_eq!(ids(&taken).concat(), (1..=200).collect::<Vec<_>>());
        let now: Vec<u64> = roster.iter().map(|o| o.stream_id).collect();
        let want: Vec<u64> = (1..=201).filter(|&id| id != 5 && id != 150).collect();
        assert_eq!(now, want);
        assert!(
            !Arc::ptr_eq(&taken[0], &roster.slices()[0]),
            "the changed slice was copied"
        );
    }

    #[test]
    fn removing_an_absent_stream_changes_nothing() {
        let mut roster = roster(3);
        roster.remove(0);
        roster.remove(4);
        roster.remove(2);
        roster.remove(2);
        assert_eq!(ids(&roster.slices()), [vec![1, 3]]);
        Roster::default().remove(1);
    }

    #[test]
    fn thinned_slices_join_their_neighbours_and_empty_ones_go() {
        let mut roster = roster(640);
        // Keep one stream in eight: every slice falls to 16, under a quarter full.
        for id in 1..=640 {
            if id % 8 != 0 {
                roster.remove(id);
            }
        }
        let slices = roster.slices();
        assert!(slices.len() <= 2, "{:?}", ids(&slices));
        assert!(slices.iter().all(|slice| slice.len() <= SLICE));
        let now: Vec<u64> = roster.iter().map(|o| o.stream_id).collect();
        assert_eq!(now, (1..=80).map(|n| n * 8).collect::<Vec<_>>());
        for id in (1..=80).map(|n| n * 8) {
            roster.remove(id);
        }
        assert!(roster.slices().is_empty());
    }
}
