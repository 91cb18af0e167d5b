//! Feeds arbitrary bytes to the frame decoder. Any panic, overflow or runaway allocation is
//! a bug. A frame that decodes must re-encode to bytes that decode and re-encode to the very
//! same bytes (compared as bytes, so NaN scores compare equal to themselves).
#![no_main]

use libfuzzer_sys::fuzz_target;
use topgun_core::protocol::{Limits, Message};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(msg) = Message::decode(data, &limits) {
        let first = msg.encode();
        let again = Message::decode(&first, &limits).expect("our own encoding decodes");
        assert_eq!(again.encode(), first, "re-encoding is not stable");
    }
});
