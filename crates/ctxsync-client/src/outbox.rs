//! The durable outbox: pushes that could not reach the server wait here, in order, and
//! are retried (with exponential backoff and jitter) on every later command until the
//! server takes them. Each keeps its `request_id`, so a push that did reach the server
//! before the connection broke is answered `replayed` instead of applied twice.
//!
//! One file per push under `.ctxsync/outbox/`, written atomically; a lock file keeps two
//! processes from numbering or sending the same queue at once. A push the server refuses
//! for good (4xx other than a conflict answer) moves to `outbox/failed/` so it neither
//! blocks the queue nor disappears silently.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ctxsync_core::{PushRequest, PushResponse};
use serde::{Deserialize, Serialize};

use crate::files::atomic_write;
use crate::remote::RemoteError;
use crate::ClientError;

/// One queued push.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxItem {
    pub seq: u64,
    pub context: String,
    pub queued_ms: u64,
    pub request: PushRequest,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// What a flush did.
#[derive(Debug, Default)]
pub struct FlushReport {
    /// Delivered, in order, with the server's answer.
    pub delivered: Vec<(OutboxItem, PushResponse)>,
    /// Refused for good and moved to `failed/`.
    pub failed: Vec<(OutboxItem, String)>,
    /// Still waiting (the server is unreachable).
    pub remaining: usize,
    pub last_error: Option<String>,
}

/// What `status` shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OutboxStatus {
    pub pending: usize,
    pub failed: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_queued_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The outbox directory of one project.
#[derive(Debug, Clone)]
pub struct Outbox {
    dir: PathBuf,
}

/// Held while a process numbers or sends the queue.
struct QueueLock(File);

impl Drop for QueueLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

impl Outbox {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn io(&self, path: &Path) -> impl Fn(std::io::Error) -> ClientError + '_ {
        let path = path.to_path_buf();
        move |error| ClientError::Io {
            path: path.clone(),
            error,
        }
    }

    fn lock(&self) -> Result<QueueLock, ClientError> {
        std::fs::create_dir_all(&self.dir).map_err(self.io(&self.dir))?;
        let path = self.dir.join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(self.io(&path))?;
        file.lock().map_err(self.io(&path))?;
        Ok(QueueLock(file))
    }

    fn item_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:012}.json"))
    }

    /// Queued pushes, oldest first.
    pub fn pending(&self) -> Result<Vec<OutboxItem>, ClientError> {
        let mut items = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(items),
            Err(e) => return Err(self.io(&self.dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(self.io(&self.dir))?;
            let path = entry.path();
            let is_item = path.extension().is_some_and(|e| e == "json")
                && path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .is_some_and(|s| s.bytes().all(|b| b.is_ascii_digit()));
            if !is_item {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(self.io(&path))?;
            let item: OutboxItem = serde_json::from_str(&text).map_err(|e| {
                ClientError::Input(format!(
                    "{}: unreadable outbox entry ({e}); move it away to continue",
                    path.display()
                ))
            })?;
            items.push(item);
        }
        items.sort_by_key(|i| i.seq);
        Ok(items)
    }

    /// Appends a push to the queue; durable when this returns.
    pub fn enqueue(
        &self,
        context: &str,
        request: PushRequest,
        error: &str,
        now_ms: u64,
    ) -> Result<OutboxItem, ClientError> {
        let _lock = self.lock()?;
        let seq = self.pending()?.last().map_or(1, |i| i.seq + 1);
        let item = OutboxItem {
            seq,
            context: context.to_owned(),
            queued_ms: now_ms,
            request,
            attempts: 1,
            last_error: Some(error.to_owned()),
        };
        self.write(&item)?;
        Ok(item)
    }

    fn write(&self, item: &OutboxItem) -> Result<(), ClientError> {
        let bytes = serde_json::to_vec_pretty(item)
            .map_err(|e| ClientError::Input(format!("cannot encode an outbox entry: {e}")))?;
        atomic_write(&self.item_path(item.seq), &bytes)
    }

    /// Sends the queue in order with `send`, stopping at the first push the server cannot
    /// be reached for (order matters: a later push may depend on an earlier one).
    pub fn flush(
        &self,
        mut send: impl FnMut(&OutboxItem) -> Result<PushResponse, RemoteError>,
    ) -> Result<FlushReport, ClientError> {
        let mut report = FlushReport::default();
        if !self.dir.exists() {
            return Ok(report);
        }
        let _lock = self.lock()?;
        let items = self.pending()?;
        let total = items.len();
        for (done, mut item) in items.into_iter().enumerate() {
            match send(&item) {
                Ok(answer) => {
                    let path = self.item_path(item.seq);
                    std::fs::remove_file(&path).map_err(self.io(&path))?;
                    report.delivered.push((item, answer));
                }
                Err(e) if e.is_unavailable() => {
                    item.attempts += 1;
                    item.last_error = Some(e.to_string());
                    self.write(&item)?;
                    report.remaining = total - done;
                    report.last_error = Some(e.to_string());
                    break;
                }
                Err(e) => {
                    let failed_dir = self.dir.join("failed");
                    std::fs::create_dir_all(&failed_dir).map_err(self.io(&failed_dir))?;
                    item.last_error = Some(e.to_string());
                    let bytes = serde_json::to_vec_pretty(&item).map_err(|e| {
                        ClientError::Input(format!("cannot encode an outbox entry: {e}"))
                    })?;
                    atomic_write(&failed_dir.join(format!("{:012}.json", item.seq)), &bytes)?;
                    let path = self.item_path(item.seq);
                    std::fs::remove_file(&path).map_err(self.io(&path))?;
                    report.failed.push((item, e.to_string()));
                }
            }
        }
        Ok(report)
    }

    pub fn status(&self) -> Result<OutboxStatus, ClientError> {
        let pending = self.pending()?;
        let failed = std::fs::read_dir(self.dir.join("failed"))
            .map(|d| d.filter_map(Result::ok).count())
            .unwrap_or(0);
        Ok(OutboxStatus {
            pending: pending.len(),
            failed,
            oldest_queued_ms: pending.first().map(|i| i.queued_ms),
            last_error: pending.iter().rev().find_map(|i| i.last_error.clone()),
        })
    }
}

/// Runs `call` up to `attempts` times while it fails with an error worth retrying,
/// sleeping `base`, `2·base`, `4·base`, ... with ±50 % jitter in between (so a crowd of
/// agents does not retry in lockstep).
pub fn with_backoff<T>(
    attempts: u32,
    base: Duration,
    mut call: impl FnMut() -> Result<T, RemoteError>,
) -> Result<T, RemoteError> {
    let mut delay = base;
    let mut attempt = 1;
    loop {
        match call() {
            Err(e) if e.is_unavailable() && attempt < attempts => {
                std::thread::sleep(jitter(delay));
                delay = delay.saturating_mul(2).min(Duration::from_secs(30));
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// `delay` scaled by a factor in [0.5, 1.5), from a cheap per-call pseudo-random source
/// (spreading retries needs no cryptographic randomness).
pub fn jitter(delay: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    let mixed = nanos
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(17)
        .wrapping_add(std::process::id() as u64);
    let factor = 0.5 + (mixed % 1000) as f64 / 1000.0;
    delay.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ctxsync_core::{Change, Path};
    use serde_json::json;

    fn request(id: &str) -> PushRequest {
        PushRequest {
            agent: "builder".into(),
            level: Default::default(),
            base_revision: None,
            request_id: Some(id.into()),
            strategy: Default::default(),
            summary: String::new(),
            changes: vec![Change::set(Path::parse("a").expect("path"), json!(id))],
        }
    }

    fn unreachable() -> RemoteError {
        RemoteError::Transport {
            url: "http://127.0.0.1:1".into(),
            message: "connection refused".into(),
        }
    }

    #[test]
    fn keeps_order_and_stops_at_the_first_unreachable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = Outbox::new(dir.path().join("outbox"));
        for id in ["r1", "r2", "r3"] {
            outbox
                .enqueue("default", request(id), "down", 1)
                .expect("enqueue");
        }
        let mut sent = Vec::new();
        let report = outbox
            .flush(|item| {
                let id = item.request.request_id.clone().unwrap_or_default();
                if id == "r2" {
                    return Err(unreachable());
                }
                sent.push(id);
                Ok(PushResponse::default())
            })
            .expect("flush");
        assert_eq!(sent, ["r1"]);
        assert_eq!(report.remaining, 2);
        let left: Vec<_> = outbox
            .pending()
            .expect("pending")
            .into_iter()
            .map(|i| (i.request.request_id.unwrap_or_default(), i.attempts))
            .collect();
        assert_eq!(left, [("r2".to_owned(), 2), ("r3".to_owned(), 1)]);
        // A later item is numbered after what is still queued.
        let item = outbox
            .enqueue("default", request("r4"), "down", 2)
            .expect("enqueue");
        assert_eq!(item.seq, 4);
    }

    #[test]
    fn refused_pushes_move_to_failed_and_do_not_block() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = Outbox::new(dir.path().join("outbox"));
        outbox
            .enqueue("default", request("bad"), "down", 1)
            .expect("enqueue");
        outbox
            .enqueue("default", request("good"), "down", 1)
            .expect("enqueue");
        let report = outbox
            .flush(|item| match item.request.request_id.as_deref() {
                Some("bad") => Err(RemoteError::Status {
                    status: 400,
                    code: "bad_request".into(),
                    message: "bad path".into(),
                }),
                _ => Ok(PushResponse::default()),
            })
            .expect("flush");
        assert_eq!(report.delivered.len(), 1);
        assert_eq!(report.failed.len(), 1);
        let status = outbox.status().expect("status");
        assert_eq!((status.pending, status.failed), (0, 1));
    }

    #[test]
    fn backoff_retries_only_what_may_succeed() {
        let mut calls = 0;
        let result: Result<(), _> = with_backoff(3, Duration::from_millis(1), || {
            calls += 1;
            Err(unreachable())
        });
        assert!(result.is_err());
        assert_eq!(calls, 3);
        let mut calls = 0;
        let result: Result<(), _> = with_backoff(3, Duration::from_millis(1), || {
            calls += 1;
            Err(RemoteError::Decode("x".into()))
        });
        assert!(result.is_err());
        assert_eq!(calls, 1);
    }
}
