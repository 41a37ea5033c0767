//! Reading and writing documents on disk: YAML or JSON in, YAML out, atomic writes.

use std::io::Write;
use std::path::Path;

use ctxsync_core::limits::{self, StrictValue};
use serde_json::Value;

use crate::ClientError;

/// Writes `bytes` to `path` so that readers see the old file or the new one, never a
/// half-written one, and the new one survives a crash once this returns: temp file in the
/// same directory, fsync, rename, fsync of the directory.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), ClientError> {
    let io = |source| ClientError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".ctxsync-tmp-")
        .tempfile_in(dir)
        .map_err(io)?;
    tmp.write_all(bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    if let Ok(d) = std::fs::File::open(dir) {
        // Makes the rename itself durable; not every platform allows it on a directory.
        let _ = d.sync_all();
    }
    Ok(())
}

/// Parses YAML (which includes JSON) into a JSON value. `what` names the input in errors.
/// Under the same rules as the server's bodies: a leading byte-order mark is dropped,
/// bracket nesting is bounded before the parser runs, `.nan`/`.inf` are refused (JSON
/// cannot hold them) and so is nesting past the document limit.
pub fn parse_document(text: &str, what: &str) -> Result<Value, ClientError> {
    let text = limits::strip_bom(text);
    limits::check_text_nesting(text.as_bytes())
        .map_err(|e| ClientError::Input(format!("{what}: {e}")))?;
    serde_norway::from_str::<StrictValue>(text)
        .map(|v| v.0)
        .map_err(|e| ClientError::Input(format!("{what}: malformed YAML/JSON: {e}")))
}

/// YAML text of a value.
pub fn to_yaml(value: &Value) -> String {
    serde_norway::to_string(value).unwrap_or_else(|_| format!("{value}\n"))
}
