//! Request bodies and `Accept` headers as the server reads them: a push body in JSON and
//! in YAML, and answer-format negotiation, never panic; an accepted body carries only
//! values JSON can hold, nested within the limit.
#![no_main]

use axum::http::{header, HeaderMap, HeaderValue};
use ctxsync_core::limits::{self, MAX_DEPTH};
use ctxsync_core::PushRequest;
use ctxsync_server::negotiate::{self, Format};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for format in [Format::Json, Format::Yaml] {
        if let Ok(request) = negotiate::parse::<PushRequest>(format, data) {
            for change in &request.changes {
                let json = change.to_json();
                assert!(limits::depth(&json) <= MAX_DEPTH + 1);
            }
        }
        let _ = negotiate::parse::<serde_json::Value>(format, data);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(value) = HeaderValue::from_str(text) {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT, value);
            let _ = Format::of_answer(&headers, None);
        }
        let _ = Format::of_answer(&HeaderMap::new(), Some(text));
    }
});
