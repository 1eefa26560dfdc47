//! A hostile peer: arbitrary messages into a session that already holds a
//! small folder. The session never panics and the folder's paths stay valid.
#![no_main]

use fsync_core::chunks::Chunks;
use fsync_core::folder::{split_path, Folder, Kind};
use fsync_core::session::Session;
use fsync_core::AgentId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut f = Folder::new(AgentId::from_index(1));
    if let Ok(id) = f.create("a/b.txt", Kind::File, 1) {
        let _ = f.set_text(id, "hello", 2);
    }
    let mut chunks = Chunks::default();
    let mut s = Session::new();
    s.start(&f, &chunks);
    // Messages are separated by a 0xff 0xfe marker in the input.
    for msg in data.split(|&b| b == 0xfe) {
        let _ = s.handle_message(0, msg, &mut f, &mut chunks);
        while s.poll_transmit(&f).is_some() {}
        while s.poll_event().is_some() {}
    }
    let paths: Vec<String> = f.tree().nodes().map(|n| n.path.clone()).collect();
    for p in paths {
        assert!(split_path(&p).is_ok(), "invalid path {p:?} in the tree");
    }
});
