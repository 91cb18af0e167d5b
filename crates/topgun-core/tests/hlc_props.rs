//! The HLC never goes backwards, whatever the wall clock does and whatever remote
//! timestamps it observes.

// Test code: a panic is a test failure, and casts apply to small generated numbers.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss
)]

mod common;

use common::{node, ts};
use proptest::prelude::*;
use topgun_core::{Hlc, Timestamp};

#[derive(Debug, Clone)]
enum Event {
    /// The wall clock moves by this many ms (negative: stepped back), then a local event.
    Now(i64),
    /// A remote timestamp arrives (millis relative to the current wall clock).
    Remote {
        offset_ms: i64,
        counter: u32,
        node: usize,
    },
}

fn arb_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (-5_000i64..5_000).prop_map(Event::Now),
        (
            -100_000i64..100_000,
            prop_oneof![0u32..5, Just(u32::MAX - 1), Just(u32::MAX)],
            0usize..3
        )
            .prop_map(|(offset_ms, counter, node)| Event::Remote {
                offset_ms,
                counter,
                node
            }),
    ]
}

proptest! {
    #[test]
    fn hlc_is_monotonic(events in prop::collection::vec(arb_event(), 1..200)) {
        let mut hlc = Hlc::new(node("local"));
        let mut wall: u64 = 1_000_000;
        let mut floor: Option<Timestamp> = None;
        for event in events {
            match event {
                Event::Now(jump) => {
                    wall = wall.saturating_add_signed(jump);
                    let t = hlc.now(wall);
                    prop_assert!(t.millis >= wall, "physical part never lags the wall clock");
                    if let Some(prev) = &floor {
                        prop_assert!(t > *prev, "{t:?} must follow {prev:?}");
                    }
                    floor = Some(t);
                }
                Event::Remote { offset_ms, counter, node } => {
                    let remote = ts(wall.saturating_add_signed(offset_ms), counter, ["a", "b", "c"][node]);
                    let before = hlc.last();
                    hlc.update(&remote, wall).unwrap();
                    prop_assert!(hlc.last() > before, "update always advances");
                    let next = hlc.now(wall);
                    prop_assert!(next > remote, "{next:?} must follow the remote {remote:?}");
                    if let Some(prev) = &floor {
                        prop_assert!(next > *prev);
                    }
                    floor = Some(next);
                }
            }
        }
    }

    #[test]
    fn timestamp_string_round_trips(millis in any::<u64>(), counter in any::<u32>(), id in "[a-zA-Z0-9_.-]{1,40}") {
        let t = ts(millis, counter, &id);
        prop_assert_eq!(t.to_string().parse::<Timestamp>(), Ok(t));
    }
}
