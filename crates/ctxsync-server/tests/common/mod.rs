//! Test harness: a real server on an ephemeral loopback port over a real SQLite file in
//! a temp dir, a blocking HTTP client (ureq) and a small Server-Sent Events reader over a
//! plain TCP socket (so a test can disconnect it at will).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ctxsync_server::{AppState, ServerConfig};
use ctxsync_store::{SqliteStore, Store, StoreOptions};
use serde_json::Value;

pub struct Server {
    pub base: String,
    pub addr: String,
    pub store: Arc<SqliteStore>,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start() -> Self {
        Self::with(StoreOptions::default(), ServerConfig::default())
    }

    pub fn with(options: StoreOptions, config: ServerConfig) -> Self {
        Self::with_feed(options, config, None)
    }

    /// A server with the agents watcher's feed attached (as `serve --watch-agents`).
    pub fn with_feed(
        options: StoreOptions,
        config: ServerConfig,
        feed: Option<Arc<ctxsync_server::agent_sync::AgentSyncFeed>>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path().join("ctxsync.db"), options).unwrap());
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let shared: Arc<dyn Store> = store.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                port_tx.send(listener.local_addr().unwrap().port()).unwrap();
                let state = AppState::new(shared, config);
                if let Some(feed) = feed {
                    state.attach_agent_sync(feed).unwrap();
                }
                ctxsync_server::serve(listener, state, async move {
                    let _ = stop_rx.await;
                })
                .await
                .unwrap();
            });
        });
        let port = port_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Self {
            base: format!("http://127.0.0.1:{port}"),
            addr: format!("127.0.0.1:{port}"),
            store,
            dir,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// A new token acting as `agent`.
    pub fn token(&self, agent: &str) -> String {
        self.token_with_role(agent, ctxsync_store::Role::Agent)
    }

    /// A new token acting as `agent` with `role`.
    pub fn token_with_role(&self, agent: &str, role: ctxsync_store::Role) -> String {
        let secret = format!("test-secret-{agent}-{}", ulid_like());
        self.store
            .create_token(agent, &secret, "test", role)
            .unwrap();
        secret
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn revision(&self, ctx: &str) -> u64 {
        self.store.head(ctx).unwrap().revision
    }

    /// Creates `ctx` over HTTP with `document`.
    pub fn create(&self, token: &str, ctx: &str, document: Value) {
        let r = put_json(
            &self.url(&format!("/v1/contexts/{ctx}")),
            token,
            &serde_json::json!({ "document": document }),
        );
        assert_eq!(r.status, 201, "{}", r.text());
    }

    /// Raises the horizon of `ctx` to its current revision, as compaction would: a
    /// snapshot at the head, then the older op log dropped (raw SQL: the store has no
    /// compaction call yet).
    pub fn compact(&self, ctx: &str) -> u64 {
        let head = self.store.snapshot(ctx).unwrap();
        let conn = rusqlite::Connection::open(self.dir.path().join("ctxsync.db")).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn.execute(
            "UPDATE contexts SET horizon = ?1 WHERE name = ?2",
            rusqlite::params![head.revision as i64, ctx],
        )
        .unwrap();
        conn.execute(
            "DELETE FROM oplog WHERE context = ?1 AND revision <= ?2",
            rusqlite::params![ctx, head.revision as i64],
        )
        .unwrap();
        head.revision
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn ulid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{nanos:x}{:x}", N.fetch_add(1, Ordering::Relaxed))
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: ureq::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// Asserts the error shape and code.
    pub fn assert_error(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "{}", self.text());
        let body = self.json();
        assert_eq!(body["error"], code, "{body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        body
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// One request; `token` None sends no Authorization header.
pub fn request(
    method: &str,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Resp {
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    if let Some(token) = token {
        builder = builder.header("Authorization", format!("Bearer {token}"));
    }
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let agent = agent();
    let response = match body {
        Some(body) => agent.run(builder.body(body.to_vec()).unwrap()),
        None => agent.run(builder.body(()).unwrap()),
    };
    let mut response = response.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .body_mut()
        .with_config()
        .limit(64 * 1024 * 1024)
        .read_to_vec()
        .unwrap_or_default();
    Resp {
        status,
        headers,
        body,
    }
}

pub fn get(url: &str, token: &str) -> Resp {
    request("GET", url, Some(token), &[], None)
}

pub fn post_json(url: &str, token: &str, body: &Value) -> Resp {
    request(
        "POST",
        url,
        Some(token),
        &[("Content-Type", "application/json")],
        Some(body.to_string().as_bytes()),
    )
}

pub fn put_json(url: &str, token: &str, body: &Value) -> Resp {
    request(
        "PUT",
        url,
        Some(token),
        &[("Content-Type", "application/json")],
        Some(body.to_string().as_bytes()),
    )
}

/// The seed's example context (the spec's `shared_context`, trimmed).
pub fn seed_doc() -> Value {
    serde_json::json!({
        "version": "2.0",
        "project_state": {
            "current_phase": "implementation",
            "active_tasks": [
                {"id": "task-123", "status": "in_progress", "owner": "builder", "started": "2024-01-20T09:00:00Z"}
            ],
            "completed_tasks": [
                {"id": "task-122", "result": "success", "summary": "Database schema created"}
            ],
            "blocked_tasks": [
                {"id": "task-124", "reason": "Awaiting API specification", "blocker_owner": "planner"}
            ]
        },
        "technical_context": {
            "architecture": {"pattern": "microservices", "hash": "a3f5b8c9"},
            "code_changes": {"summary": {"files_added": 5, "files_modified": 12}}
        },
        "decisions_log": {
            "recent": [
                {"id": "dec-2024-01-20-001", "decision": "Use Redis for session storage", "timestamp": "2024-01-20T08:30:00Z"}
            ],
            "archived_count": 45
        },
        "communication": {
            "pending_questions": [
                {"id": "q-001", "from": "builder", "to": "planner", "question": "Should we implement rate limiting?", "priority": "high"}
            ],
            "notes": ["Performance testing scheduled for next phase"]
        }
    })
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap()
    }

    pub fn revision(&self) -> u64 {
        self.id.as_deref().unwrap().parse().unwrap()
    }
}

/// A Server-Sent Events reader over a raw socket (HTTP/1.1, chunked).
pub struct Sse {
    reader: BufReader<TcpStream>,
    socket: TcpStream,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pending: String,
    chunked: bool,
}

impl Sse {
    pub fn connect(addr: &str, path: &str, token: &str, extra: &[(&str, &str)]) -> Sse {
        let socket = TcpStream::connect(addr).unwrap();
        socket.set_nodelay(true).unwrap();
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n"
        );
        for (k, v) in extra {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("\r\n");
        (&socket).write_all(request.as_bytes()).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reader = BufReader::new(socket.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let status: u16 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let chunked = headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
        Sse {
            reader,
            socket,
            status,
            headers,
            pending: String::new(),
            chunked,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Reads more of the body; false on timeout or end.
    fn fill(&mut self, deadline: Instant) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let _ = self.socket.set_read_timeout(Some(left));
        if self.chunked {
            let mut size_line = String::new();
            match self.reader.read_line(&mut size_line) {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
            let Ok(size) = usize::from_str_radix(size_line.trim(), 16) else {
                return false;
            };
            if size == 0 {
                return false;
            }
            let _ = self.socket.set_read_timeout(Some(Duration::from_secs(10)));
            let mut chunk = vec![0u8; size + 2];
            if self.reader.read_exact(&mut chunk).is_err() {
                return false;
            }
            self.pending
                .push_str(&String::from_utf8_lossy(&chunk[..size]));
            true
        } else {
            let mut buf = [0u8; 4096];
            match self.reader.read(&mut buf) {
                Ok(0) | Err(_) => false,
                Ok(n) => {
                    self.pending.push_str(&String::from_utf8_lossy(&buf[..n]));
                    true
                }
            }
        }
    }

    /// The next event (comments skipped), or None after `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                let mut event = SseEvent {
                    event: "message".into(),
                    id: None,
                    data: String::new(),
                };
                let mut any = false;
                for line in block.lines() {
                    if line.starts_with(':') || line.is_empty() {
                        continue;
                    }
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    any = true;
                    match field {
                        "event" => event.event = value.to_owned(),
                        "id" => event.id = Some(value.to_owned()),
                        "data" => {
                            if !event.data.is_empty() {
                                event.data.push('\n');
                            }
                            event.data.push_str(value);
                        }
                        _ => {}
                    }
                }
                if any {
                    return Some(event);
                }
                continue;
            }
            if !self.fill(deadline) {
                return None;
            }
        }
    }

    /// Reads the rest of a non-streaming answer (an error body).
    pub fn rest(&mut self) -> String {
        let mut out = std::mem::take(&mut self.pending);
        let _ = self
            .socket
            .set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = String::new();
        let _ = self.reader.read_to_string(&mut buf);
        out.push_str(&buf);
        out
    }

    pub fn close(self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }
}
