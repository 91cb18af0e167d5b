//! What a shard reports to `/metrics` about what it holds, kept as changes are applied so
//! that a scrape reads numbers and never walks the records (COMPAT.md §8).
//!
//! Invariants, checked by the shard's tests against a scan:
//! * `tombstone_bytes` = the sum over the shard's OR maps of [`topgun_core::OrMap::tombstone_bytes`]
//!   (each tag's UTF-8 length, once per key): every OR change is tallied by the difference it
//!   made to its map's count, so a tag tombstoned twice counts once and a pushed tombstone the
//!   shard dropped never counts;
//! * `tombstoned_total` only grows: by every increase of `tombstone_bytes` (loading counts as
//!   tombstoning what was recovered);
//! * a map name is reported as appeared when it goes from holding no key in this shard (LWW
//!   and OR together) to holding one, and as emptied on the way back; reserved maps never.

use crate::data::ops::RESERVED_PREFIXES;

/// A change in whether a map holds any key in this shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presence {
    Appeared(String),
    Emptied(String),
}

/// The shard's running counts; the driver copies them out after each change.
#[derive(Debug, Default)]
pub struct Tally {
    tombstone_bytes: u64,
    tombstoned_total: u64,
    /// Changes not yet taken by the driver. Empty (and unallocated) but when a map appears
    /// or empties, which a write does once per map and shard, not once per key.
    presence: Vec<Presence>,
}

fn widen(bytes: usize) -> u64 {
    u64::try_from(bytes).unwrap_or(u64::MAX)
}

impl Tally {
    /// An OR map's tombstone bytes went from `before` to `after`.
    pub fn tombstones_moved(&mut self, before: usize, after: usize) {
        if after >= before {
            let added = widen(after - before);
            self.tombstone_bytes += added;
            self.tombstoned_total += added;
        } else {
            let dropped = widen(before - after);
            debug_assert!(dropped <= self.tombstone_bytes, "more dropped than held");
            self.tombstone_bytes = self.tombstone_bytes.saturating_sub(dropped);
        }
    }

    /// `map` now holds keys here (`holds`), where it held none, or the other way round.
    pub fn presence_changed(&mut self, map: &str, holds: bool) {
        if RESERVED_PREFIXES.iter().any(|p| map.starts_with(p)) {
            return;
        }
        self.presence.push(if holds {
            Presence::Appeared(map.to_owned())
        } else {
            Presence::Emptied(map.to_owned())
        });
    }

    /// UTF-8 bytes of the OR tombstone tags the shard holds.
    pub fn tombstone_bytes(&self) -> u64 {
        self.tombstone_bytes
    }

    /// Bytes tombstoned since the shard started, what it loaded included.
    pub fn tombstoned_total(&self) -> u64 {
        self.tombstoned_total
    }

    /// The presence changes since the last call, oldest first.
    pub fn take_presence(&mut self) -> Vec<Presence> {
        std::mem::take(&mut self.presence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tombstone_bytes_rise_and_fall_while_the_total_only_rises() {
        let mut tally = Tally::default();
        tally.tombstones_moved(0, 10);
        tally.tombstones_moved(10, 10);
        tally.tombstones_moved(10, 4);
        assert_eq!((tally.tombstone_bytes(), tally.tombstoned_total()), (4, 10));
    }

    #[test]
    fn reserved_maps_are_never_reported() {
        let mut tally = Tally::default();
        tally.presence_changed("__topgun_counters", true);
        tally.presence_changed("_topgun_x", true);
        tally.presence_changed("todos", true);
        tally.presence_changed("todos", false);
        assert_eq!(
            tally.take_presence(),
            vec![
                Presence::Appeared("todos".into()),
                Presence::Emptied("todos".into())
            ]
        );
        assert!(tally.take_presence().is_empty());
    }
}
