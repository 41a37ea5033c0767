//! Reading and writing documents on disk: YAML or JSON in, YAML out, atomic writes.

use std::io::Write;
use std::path::Path;

use ctxsync_core::limits::{self, StrictValue};
use serde_json::Value;

use crate::ClientError;

/// A durable temp file holding `bytes`, in `path`'s directory (created if need be), ready
/// to be renamed over `path`.
fn prepare(path: &Path, bytes: &[u8]) -> Result<tempfile::NamedTempFile, ClientError> {
    let dir = folder_of(path);
    std::fs::create_dir_all(dir).map_err(io_error(path))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".ctxsync-tmp-")
        .tempfile_in(dir)
        .map_err(io_error(path))?;
    tmp.write_all(bytes).map_err(io_error(path))?;
    tmp.as_file().sync_all().map_err(io_error(path))?;
    Ok(tmp)
}

fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> ClientError + '_ {
    move |error| ClientError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Makes a rename into `path`'s directory durable; not every platform allows it.
fn sync_folder(path: &Path) {
    if let Ok(d) = std::fs::File::open(folder_of(path)) {
        let _ = d.sync_all();
    }
}

/// Writes `bytes` to `path` so that readers see the old file or the new one, never a
/// half-written one, and the new one survives a crash once this returns: temp file in the
/// same directory, fsync, rename, fsync of the directory.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), ClientError> {
    let tmp = prepare(path, bytes)?;
    tmp.persist(path).map_err(|e| io_error(path)(e.error))?;
    sync_folder(path);
    Ok(())
}

/// Like [`atomic_write`], but only if `path` does not exist: `false`, with nothing
/// written, when it does (checked by the rename itself, so a file created meanwhile by
/// someone else is never replaced).
pub fn atomic_create(path: &Path, bytes: &[u8]) -> Result<bool, ClientError> {
    let tmp = prepare(path, bytes)?;
    match tmp.persist_noclobber(path) {
        Ok(_) => {}
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(io_error(path)(e.error)),
    }
    sync_folder(path);
    Ok(true)
}

/// Like [`atomic_write`], but only if `path` still holds `expected` (or is gone): `false`,
/// with nothing written, when someone changed it. The check is made after the slow part
/// (writing and syncing the new bytes), right before the rename, so a save that lands
/// while this runs is seen rather than overwritten, except within that last instant:
/// files have no compare-and-swap.
pub fn atomic_replace_if(path: &Path, expected: &[u8], bytes: &[u8]) -> Result<bool, ClientError> {
    let tmp = prepare(path, bytes)?;
    match std::fs::read(path) {
        Ok(now) if now != expected => return Ok(false),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(path)(e)),
    }
    tmp.persist(path).map_err(|e| io_error(path)(e.error))?;
    sync_folder(path);
    Ok(true)
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

/// The UTF-8 text of an input (file, standard input), or an input error naming `what`
/// and where the first bad byte is: bytes that are not text are the user's mistake, not
/// a failure of the file system.
pub fn decode_text(bytes: Vec<u8>, what: &str) -> Result<String, ClientError> {
    String::from_utf8(bytes).map_err(|e| {
        ClientError::Input(format!(
            "{what}: not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ))
    })
}

/// YAML text of a value.
pub fn to_yaml(value: &Value) -> String {
    serde_norway::to_string(value).unwrap_or_else(|_| format!("{value}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_document() {
        let yaml = "\u{feff}project_state:\n  current_phase: build\n";
        assert_eq!(
            parse_document(yaml, "f").expect("parses"),
            json!({"project_state": {"current_phase": "build"}})
        );
        let json_text = "\u{feff}[{\"path\": \"x\", \"to\": 1}]";
        assert_eq!(
            parse_document(json_text, "f").expect("parses"),
            json!([{"path": "x", "to": 1}])
        );
        assert_eq!(
            parse_document("\u{feff}42", "f").expect("scalar"),
            json!(42)
        );
        // Only a leading one: inside a string it is data.
        assert_eq!(
            parse_document("a: \"x\u{feff}\"", "f").expect("parses"),
            json!({"a": "x\u{feff}"})
        );
    }

    #[test]
    fn atomic_create_never_replaces_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/context.yaml");
        assert!(atomic_create(&path, b"a: 1\n").expect("created"));
        assert!(!atomic_create(&path, b"a: 2\n").expect("refused"));
        assert_eq!(std::fs::read(&path).expect("read"), b"a: 1\n");
        // No temp file is left behind by the refused write.
        let names: Vec<_> = std::fs::read_dir(path.parent().expect("dir"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["context.yaml"]);
    }

    #[test]
    fn atomic_replace_if_only_replaces_what_was_expected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("context.yaml");
        std::fs::write(&path, b"a: 1\n").expect("write");
        assert!(!atomic_replace_if(&path, b"a: 0\n", b"a: 2\n").expect("refused"));
        assert_eq!(std::fs::read(&path).expect("read"), b"a: 1\n");
        assert!(atomic_replace_if(&path, b"a: 1\n", b"a: 2\n").expect("replaced"));
        assert_eq!(std::fs::read(&path).expect("read"), b"a: 2\n");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["context.yaml"], "no temp file left behind");
    }

    #[test]
    fn bytes_that_are_not_utf8_are_an_input_error_with_the_offset() {
        let err = decode_text(b"ok: \xff\xfe".to_vec(), "standard input").unwrap_err();
        assert!(
            matches!(&err, ClientError::Input(m) if m.contains("standard input: not UTF-8 text (invalid byte at offset 4)")),
            "{err}"
        );
        assert_eq!(decode_text(b"a: 1".to_vec(), "x").expect("text"), "a: 1");
    }
}
