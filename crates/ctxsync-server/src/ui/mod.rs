//! The live dashboard at `/ui`: hand-written HTML, CSS and JavaScript modules under
//! `crates/ctxsync-server/ui/`, embedded in the binary (no Node.js to build or run it).
//!
//! The page and its assets need no token; everything they show comes from the `/v1`
//! API, which the page calls with the bearer token the user gives it once (kept in the
//! tab's `sessionStorage`). The event stream is read with `fetch()` streaming, so the
//! token travels in the `Authorization` header there too, never in a URL.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::errors::ApiError;
use crate::routes::P;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            bytes: include_bytes!(concat!("../../ui/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file the page loads.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("overview.js", JS),
    asset!("context.js", JS),
    asset!("tree.js", JS),
    asset!("agents.js", JS),
    asset!("conflicts.js", JS),
    asset!("trends.js", JS),
    asset!("agentsync.js", JS),
    asset!("plot.js", JS),
];

/// Only this origin's scripts, styles and connections; no inline script, no frames.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The sum of the embedded files' sizes, in bytes.
pub fn total_size() -> usize {
    ASSETS.iter().map(|a| a.bytes.len()).sum()
}

/// FNV-1a of the bytes: an ETag that changes whenever the file does.
fn etag(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("\"{hash:016x}\"")
}

fn serve(asset: &Asset, headers: &HeaderMap) -> Response {
    let tag = etag(asset.bytes);
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.bytes,
        )
            .into_response()
    };
    let h = response.headers_mut();
    if let Ok(tag) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, tag);
    }
    // Revalidate every time: a new binary must not run yesterday's script.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    response
}

/// The dashboard's page.
#[utoipa::path(
    get, path = "/ui", tag = "ui",
    responses((status = 200, description = "The dashboard (HTML); it asks for a token", content_type = "text/html", body = String))
)]
pub async fn page(headers: HeaderMap) -> Response {
    serve(&ASSETS[0], &headers)
}

/// One of the dashboard's files (`app.js`, `style.css`, ...).
#[utoipa::path(
    get, path = "/ui/{asset}", tag = "ui",
    params(("asset" = String, Path, description = "File name, e.g. app.js")),
    responses(
        (status = 200, description = "The file (JavaScript, CSS or HTML)", content_type = "text/javascript", body = String),
        (status = 404, description = "No such file", body = crate::openapi::schemas::ErrorBody),
    )
)]
pub async fn asset(P(name): P<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    ASSETS
        .iter()
        .find(|a| a.name == name)
        .map(|a| serve(a, &headers))
        .ok_or_else(|| ApiError::not_found(format!("no dashboard file {name:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_page_imports_is_embedded() {
        // An import of a file that is not in ASSETS would 404 in the browser.
        for asset in ASSETS {
            let text = std::str::from_utf8(asset.bytes).unwrap_or_default();
            for import in text.split("from './").skip(1) {
                let file = import.split('\'').next().unwrap_or_default();
                assert!(
                    ASSETS.iter().any(|a| a.name == file),
                    "{} imports {file}, which is not embedded",
                    asset.name
                );
            }
        }
        assert!(total_size() > 0);
        assert_ne!(etag(b"a"), etag(b"b"));
    }
}
