//! Every decoder of untrusted bytes: never panics, never allocates beyond
//! its input. A text history that decodes must also check out.
#![no_main]

use fsync_core::folder::Meta;
use fsync_core::text::{OpLog, TextDoc};
use fsync_core::wire::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Message::decode(data);
    let _ = Meta::decode(data);
    if let Ok(log) = OpLog::decode(data) {
        let _ = TextDoc::from_oplog(log).text();
    }
});
