//! When guardd reads a kernel map of stops (HELD, API_HELD) for stops whose
//! ring buffer event was lost. Reading one costs a system call per entry,
//! and walking even an empty hash map visits every bucket in the kernel: so
//! it is read when events were lost, while a stop waits out its grace, and
//! every few seconds otherwise, not on every batch of events. The count of
//! lost events is itself a per-CPU map read, so it is looked at only every
//! `LOST_EVERY`.
use std::time::{Duration, Instant};

#[derive(Default)]
pub(super) struct MapScan {
    lost_seen: u64,
    lost_now: u64,
    lost_read: Option<Instant>,
    next: Option<Instant>,
    again: bool,
}

impl MapScan {
    const EVERY: Duration = Duration::from_secs(5);
    const LOST_EVERY: Duration = Duration::from_millis(200);

    /// Whether to read the map now; `lost` reads the ring buffer's
    /// lost-event count.
    pub(super) fn due(&mut self, now: Instant, lost: impl FnOnce() -> u64) -> bool {
        if self.again || self.next.is_none_or(|next| now >= next) {
            self.lost_now = lost();
            self.lost_read = Some(now);
            return true;
        }
        if self
            .lost_read
            .is_some_and(|read| now < read + Self::LOST_EVERY)
        {
            return false;
        }
        self.lost_now = lost();
        self.lost_read = Some(now);
        self.lost_now != self.lost_seen
    }

    /// `waiting`: a stop still waits out its grace (or for its event), so
    /// read again at the next chance.
    pub(super) fn done(&mut self, now: Instant, waiting: bool) {
        self.lost_seen = self.lost_now;
        self.next = Some(now + Self::EVERY);
        self.again = waiting;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_first_then_on_lost_events_waiting_stops_or_after_a_while() {
        let now = Instant::now();
        let later = |ms| now + Duration::from_millis(ms);
        let mut scan = MapScan::default();
        assert!(scan.due(now, || 0), "never read yet");
        scan.done(now, false);
        assert!(!scan.due(later(300), || 0));
        assert!(
            !scan.due(later(350), || panic!("read again too soon")),
            "the lost count is read at most every LOST_EVERY"
        );
        assert!(scan.due(later(600), || 1), "an event was lost");
        scan.done(later(600), false);
        assert!(!scan.due(later(900), || 1), "that loss is read already");
        assert!(
            scan.due(later(600) + MapScan::EVERY, || 1),
            "the periodic read"
        );
        scan.done(now, true);
        assert!(scan.due(now, || 1), "a stop waits out its grace");
    }
}
