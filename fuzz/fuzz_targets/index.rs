//! The watcher's on-disk index (read back at start): any bytes decode to an
//! error or to an index that encodes again, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use watcher::Index;

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = Index::decode(data) {
        let again = index.encode();
        assert!(Index::decode(&again).is_ok(), "an index that decoded must round-trip");
    }
});
