//! Paths as agents write them (dotted or JSON Pointer): parsing never panics, stays
//! within the segment limit, and a path printed back parses to the same path (the op log
//! stores canonical paths as text and reads them back).
#![no_main]

use ctxsync_core::limits::MAX_PATH_SEGMENTS;
use ctxsync_core::Path;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(path) = Path::parse(text) else {
        return;
    };
    assert!(path.segment_count() <= MAX_PATH_SEGMENTS);
    let shown = path.to_string();
    if let Ok(again) = Path::parse(&shown) {
        assert_eq!(again, path, "{text:?} printed as {shown:?}");
    }
    let _ = path.to_pointer();
});
