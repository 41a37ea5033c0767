//! A blocking HTTP client for a ctxsync server: the `/v1` protocol of DESIGN §3–§6.
//!
//! Every call maps the server's answer to a typed value or a [`RemoteError`] that keeps
//! the server's own error code and message, so the CLI can print the same message and
//! pick the same exit code as in local mode.

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use ctxsync_core::apply::Edit;
use ctxsync_core::archive::{ArchiveQuery, ArchiveRecord};
use ctxsync_core::records::{
    Head, HistoryFilter, LogEntry, Metrics, StoredConflict, SyncSample, VerifyReport,
};
use ctxsync_core::{Prefer, PushRequest, PushResponse};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Why a remote call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoteError {
    /// The server answered with an error status.
    #[error("{}", status_message(*.status, .message))]
    Status {
        status: u16,
        /// The server's error code (`not_found`, `gone`, `bad_request`, ...).
        code: String,
        message: String,
    },
    /// The server could not be reached or the connection broke.
    #[error("cannot reach the server at {url}: {message}")]
    Transport { url: String, message: String },
    /// The server answered something this client does not understand.
    #[error("unexpected answer from the server: {0}")]
    Decode(String),
}

impl RemoteError {
    /// True when retrying later may succeed (network trouble or a 5xx/503).
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Status { status, .. } => *status >= 500 || *status == 429,
            Self::Transport { .. } => true,
            Self::Decode(_) => false,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// What an error status says, in words, before the server's message: a refused token or
/// an oversized body is not an "invalid request".
fn status_message(status: u16, message: &str) -> String {
    let what = match status {
        401 => "unauthorized",
        403 => "forbidden",
        413 => "too large",
        _ => return message.to_owned(),
    };
    format!("{what}: {message}")
}

/// What a pull returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Pulled {
    Full {
        revision: u64,
        checksum: String,
        document: Value,
        omitted: Vec<String>,
    },
    Delta {
        revision: u64,
        since: u64,
        checksum: String,
        edits: Vec<Edit>,
    },
}

/// Query of a pull.
#[derive(Debug, Clone, Default)]
pub struct PullQuery {
    pub sections: Vec<String>,
    pub since: Option<u64>,
    pub at: Option<u64>,
    pub budget_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct PullBody {
    revision: u64,
    checksum: String,
    #[serde(default)]
    document: Option<Value>,
    #[serde(default)]
    omitted: Vec<String>,
    #[serde(default)]
    delta: bool,
    #[serde(default)]
    since: Option<u64>,
    #[serde(default)]
    edits: Vec<Edit>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: String,
    #[serde(default)]
    message: String,
}

/// One Server-Sent Event of `/events`.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    Revision(LogEntry),
    /// The subscriber needed revisions the server no longer keeps: pull in full.
    Resync {
        horizon: u64,
        revision: u64,
    },
}

/// A connection to one server.
#[derive(Clone)]
pub struct RemoteClient {
    base_url: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl std::fmt::Debug for RemoteClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("RemoteClient")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

pub(crate) type Response = ureq::http::Response<ureq::Body>;

impl RemoteClient {
    /// `base_url` like `http://127.0.0.1:7711`; `token` is the bearer secret.
    pub fn new(base_url: &str, token: Option<String>, timeout: Duration) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            // An unreachable host should send a push to the outbox quickly, not after
            // the whole request timeout.
            .timeout_connect(Some(timeout.min(CONNECT_TIMEOUT)))
            .build();
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            token,
            agent: config.into(),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    fn transport(&self, e: ureq::Error) -> RemoteError {
        RemoteError::Transport {
            url: self.base_url.clone(),
            message: e.to_string(),
        }
    }

    fn auth(&self) -> Option<String> {
        self.token.as_ref().map(|t| format!("Bearer {t}"))
    }

    pub(crate) fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Response, RemoteError> {
        let mut req = self.agent.get(self.url(path));
        if let Some(auth) = self.auth() {
            req = req.header("Authorization", auth);
        }
        for (k, v) in query {
            req = req.query(*k, v);
        }
        req.header("Accept", "application/json")
            .call()
            .map_err(|e| self.transport(e))
    }

    pub(crate) fn send(
        &self,
        method: &str,
        path: &str,
        body: &Value,
    ) -> Result<Response, RemoteError> {
        let url = self.url(path);
        if method == "DELETE" {
            let mut req = self.agent.delete(url);
            if let Some(auth) = self.auth() {
                req = req.header("Authorization", auth);
            }
            if let Some(fields) = body.as_object() {
                for (k, v) in fields {
                    req = req.query(k, v.as_str().map_or_else(|| v.to_string(), str::to_owned));
                }
            }
            return req
                .header("Accept", "application/json")
                .call()
                .map_err(|e| self.transport(e));
        }
        let mut req = match method {
            "PUT" => self.agent.put(url),
            _ => self.agent.post(url),
        };
        if let Some(auth) = self.auth() {
            req = req.header("Authorization", auth);
        }
        req.header("Accept", "application/json")
            .send_json(body)
            .map_err(|e| self.transport(e))
    }

    /// The body of a 2xx answer, or the server's error.
    pub(crate) fn expect<T: DeserializeOwned>(
        &self,
        response: Response,
        ok: &[u16],
    ) -> Result<T, RemoteError> {
        let status = response.status().as_u16();
        let text = read_body(response)?;
        if ok.contains(&status) {
            return serde_json::from_str(&text)
                .map_err(|e| RemoteError::Decode(format!("HTTP {status}: {e}")));
        }
        Err(status_error(status, &text))
    }

    /// The agent the token acts as (`GET /v1/whoami`): remote mode's identity.
    pub fn whoami(&self) -> Result<String, RemoteError> {
        #[derive(Deserialize)]
        struct Body {
            agent: String,
        }
        let r = self.get("/v1/whoami", &[])?;
        Ok(self.expect::<Body>(r, &[200])?.agent)
    }

    pub fn list_contexts(&self) -> Result<Vec<Head>, RemoteError> {
        #[derive(Deserialize)]
        struct Body {
            contexts: Vec<Head>,
        }
        let r = self.get("/v1/contexts", &[])?;
        Ok(self.expect::<Body>(r, &[200])?.contexts)
    }

    pub fn create_context(&self, name: &str, document: Value) -> Result<Head, RemoteError> {
        let r = self.send("PUT", &ctx_path(name, ""), &json!({ "document": document }))?;
        self.expect(r, &[200, 201])
    }

    pub fn head(&self, context: &str) -> Result<Head, RemoteError> {
        let r = self.get(&ctx_path(context, "/head"), &[])?;
        self.expect(r, &[200])
    }

    pub fn pull(&self, context: &str, query: &PullQuery) -> Result<Pulled, RemoteError> {
        let mut q = Vec::new();
        if !query.sections.is_empty() {
            q.push(("sections", query.sections.join(",")));
        }
        if let Some(since) = query.since {
            q.push(("since", since.to_string()));
        }
        if let Some(at) = query.at {
            q.push(("at", at.to_string()));
        }
        if let Some(budget) = query.budget_tokens {
            q.push(("budget_tokens", budget.to_string()));
        }
        let r = self.get(&ctx_path(context, ""), &q)?;
        let body: PullBody = self.expect(r, &[200])?;
        if body.delta {
            Ok(Pulled::Delta {
                revision: body.revision,
                since: body.since.unwrap_or_default(),
                checksum: body.checksum,
                edits: body.edits,
            })
        } else {
            Ok(Pulled::Full {
                revision: body.revision,
                checksum: body.checksum,
                document: body
                    .document
                    .ok_or_else(|| RemoteError::Decode("a full pull without a document".into()))?,
                omitted: body.omitted,
            })
        }
    }

    /// Pushes; a 409 (nothing applied because of conflicts) and a 403 whose body is a push
    /// answer (everything `not_owner`) are answers, not errors.
    pub fn push(&self, context: &str, request: &PushRequest) -> Result<PushResponse, RemoteError> {
        let body = serde_json::to_value(request).map_err(|e| RemoteError::Decode(e.to_string()))?;
        let r = self.send("POST", &ctx_path(context, "/push"), &body)?;
        let status = r.status().as_u16();
        let text = read_body(r)?;
        if matches!(status, 200 | 409 | 403) {
            if let Ok(answer) = serde_json::from_str::<PushResponse>(&text) {
                return Ok(answer);
            }
        }
        Err(status_error(status, &text))
    }

    pub fn log_since(&self, context: &str, since: u64) -> Result<Vec<LogEntry>, RemoteError> {
        let r = self.get(&ctx_path(context, "/log"), &[("since", since.to_string())])?;
        Ok(self.expect::<Entries>(r, &[200])?.entries)
    }

    pub fn history(
        &self,
        context: &str,
        filter: &HistoryFilter,
    ) -> Result<Vec<LogEntry>, RemoteError> {
        let mut q = Vec::new();
        if let Some(last) = filter.last {
            q.push(("last", last.to_string()));
        }
        if let Some(agent) = &filter.agent {
            q.push(("agent", agent.clone()));
        }
        if let Some(level) = filter.level {
            q.push(("level", level.as_str().to_owned()));
        }
        let r = self.get(&ctx_path(context, "/history"), &q)?;
        Ok(self.expect::<Entries>(r, &[200])?.entries)
    }

    pub fn conflicts(&self, context: &str) -> Result<Vec<StoredConflict>, RemoteError> {
        #[derive(Deserialize)]
        struct Body {
            conflicts: Vec<StoredConflict>,
        }
        let r = self.get(&ctx_path(context, "/conflicts"), &[])?;
        Ok(self.expect::<Body>(r, &[200])?.conflicts)
    }

    pub fn resolve_conflict(
        &self,
        context: &str,
        id: u64,
        prefer: Prefer,
    ) -> Result<Option<PushResponse>, RemoteError> {
        #[derive(Deserialize)]
        struct Body {
            #[serde(default)]
            push: Option<PushResponse>,
        }
        let prefer = match prefer {
            Prefer::Mine => "mine",
            Prefer::Theirs => "theirs",
        };
        let r = self.send(
            "POST",
            &ctx_path(context, &format!("/conflicts/{id}/resolve")),
            &json!({ "prefer": prefer }),
        )?;
        Ok(self.expect::<Body>(r, &[200])?.push)
    }

    pub fn verify(&self, context: &str) -> Result<VerifyReport, RemoteError> {
        let r = self.send("POST", &ctx_path(context, "/verify"), &json!({}))?;
        self.expect(r, &[200])
    }

    /// Reverts; a 403 whose body is a push answer (the revert would change paths the
    /// agent does not own; nothing applied) is an answer, as for [`Self::push`].
    pub fn revert(&self, context: &str, to: u64) -> Result<PushResponse, RemoteError> {
        let r = self.send("POST", &ctx_path(context, "/revert"), &json!({ "to": to }))?;
        let status = r.status().as_u16();
        let text = read_body(r)?;
        if matches!(status, 200 | 403) {
            if let Ok(answer) = serde_json::from_str::<PushResponse>(&text) {
                return Ok(answer);
            }
        }
        Err(status_error(status, &text))
    }

    pub fn record_sync(&self, context: &str, sample: &SyncSample) -> Result<(), RemoteError> {
        let body = serde_json::to_value(sample).map_err(|e| RemoteError::Decode(e.to_string()))?;
        let r = self.send("POST", &ctx_path(context, "/syncs"), &body)?;
        let status = r.status().as_u16();
        let text = read_body(r)?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(status_error(status, &text))
        }
    }

    pub fn metrics(&self, context: &str) -> Result<Metrics, RemoteError> {
        let r = self.get(&ctx_path(context, "/metrics"), &[])?;
        self.expect(r, &[200])
    }

    /// Archived entries matching `query`, oldest first (one page).
    pub fn archive_list(
        &self,
        context: &str,
        query: &ArchiveQuery,
    ) -> Result<Vec<ArchiveRecord>, RemoteError> {
        #[derive(Deserialize)]
        struct Page {
            entries: Vec<ArchiveRecord>,
        }
        let mut q = Vec::new();
        if let Some(list) = &query.list {
            q.push(("list", list.clone()));
        }
        if let Some(id) = &query.id {
            q.push(("id", id.clone()));
        }
        if let Some(text) = &query.text {
            q.push(("q", text.clone()));
        }
        if let Some(after) = query.after {
            q.push(("after", after.to_string()));
        }
        if let Some(limit) = query.limit {
            q.push(("limit", limit.to_string()));
        }
        let r = self.get(&ctx_path(context, "/archive"), &q)?;
        Ok(self.expect::<Page>(r, &[200])?.entries)
    }

    /// The server's storage use (`GET /v1/storage`).
    pub fn storage(&self) -> Result<ctxsync_core::records::StorageUsage, RemoteError> {
        let r = self.get("/v1/storage", &[])?;
        self.expect(r, &[200])
    }

    /// Compacts the op log (an admin token's call).
    pub fn compact(
        &self,
        context: &str,
        retain: &ctxsync_core::records::Retention,
    ) -> Result<ctxsync_core::records::CompactReport, RemoteError> {
        let days = retain.max_age_ms.map(|ms| ms.div_ceil(24 * 3600 * 1000));
        let body = json!({"retain_revisions": retain.revisions, "retain_days": days});
        let r = self.send("POST", &ctx_path(context, "/compact"), &body)?;
        self.expect(r, &[200])
    }

    /// Runs archival now; the archival revision, or `None` when nothing was due.
    pub fn archive_run(&self, context: &str) -> Result<Option<PushResponse>, RemoteError> {
        #[derive(Deserialize)]
        struct Answer {
            push: Option<PushResponse>,
        }
        let r = self.send("POST", &ctx_path(context, "/archive/run"), &json!({}))?;
        Ok(self.expect::<Answer>(r, &[200])?.push)
    }

    pub fn snapshot(&self, context: &str) -> Result<Head, RemoteError> {
        let r = self.send("POST", &ctx_path(context, "/snapshot"), &json!({}))?;
        self.expect(r, &[200])
    }

    /// Subscribes to the revisions after `since` (or after `Last-Event-ID` semantics: the
    /// server resumes after that revision). Blocks per event; ends when the server closes.
    pub fn events(
        &self,
        context: &str,
        since: Option<u64>,
        levels: &[&str],
    ) -> Result<EventStream, RemoteError> {
        // A stream stays open for as long as the server has nothing to say, so it must
        // not inherit the request timeout.
        let mut req = self
            .agent
            .get(self.url(&ctx_path(context, "/events")))
            .config()
            .timeout_global(None)
            .build()
            .header("Accept", "text/event-stream");
        if let Some(auth) = self.auth() {
            req = req.header("Authorization", auth);
        }
        if let Some(since) = since {
            req = req.header("Last-Event-ID", since.to_string());
        }
        if !levels.is_empty() {
            req = req.query("levels", levels.join(","));
        }
        let response = req.call().map_err(|e| self.transport(e))?;
        let status = response.status().as_u16();
        if status != 200 {
            let text = read_body(response)?;
            return Err(status_error(status, &text));
        }
        let reader = response.into_body().into_reader();
        Ok(EventStream {
            lines: BufReader::new(Box::new(reader)),
        })
    }
}

/// The events of one subscription, in order.
pub struct EventStream {
    lines: BufReader<Box<dyn Read + Send>>,
}

impl Iterator for EventStream {
    type Item = Result<StreamEvent, RemoteError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut event = String::new();
        let mut data = String::new();
        loop {
            let mut line = String::new();
            match self.lines.read_line(&mut line) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => return Some(Err(RemoteError::Decode(format!("event stream: {e}")))),
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if data.is_empty() {
                    event.clear();
                    continue;
                }
                return Some(parse_event(&event, &data));
            }
            if let Some(rest) = line.strip_prefix("event:") {
                event = rest.trim_start().to_owned();
            } else if let Some(rest) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(rest.strip_prefix(' ').unwrap_or(rest));
            }
            // `id:` is the revision, which the entry carries too; comments are keep-alives.
        }
    }
}

fn parse_event(event: &str, data: &str) -> Result<StreamEvent, RemoteError> {
    let decode = |e: serde_json::Error| RemoteError::Decode(format!("{event} event: {e}"));
    match event {
        "resync" => {
            #[derive(Deserialize)]
            struct Resync {
                horizon: u64,
                revision: u64,
            }
            let r: Resync = serde_json::from_str(data).map_err(decode)?;
            Ok(StreamEvent::Resync {
                horizon: r.horizon,
                revision: r.revision,
            })
        }
        _ => Ok(StreamEvent::Revision(
            serde_json::from_str(data).map_err(decode)?,
        )),
    }
}

#[derive(Serialize, Deserialize)]
struct Entries {
    entries: Vec<LogEntry>,
}

pub(crate) fn ctx_path(context: &str, rest: &str) -> String {
    format!("/v1/contexts/{context}{rest}")
}

/// Longest wait for a TCP connection to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Bodies larger than this are refused rather than read into memory.
const MAX_BODY: u64 = 256 * 1024 * 1024;

pub(crate) fn read_body(response: Response) -> Result<String, RemoteError> {
    response
        .into_body()
        .into_with_config()
        .limit(MAX_BODY)
        .read_to_string()
        .map_err(|e| RemoteError::Decode(format!("reading the answer: {e}")))
}

pub(crate) fn status_error(status: u16, text: &str) -> RemoteError {
    let (code, message) = match serde_json::from_str::<ErrorBody>(text) {
        Ok(body) if !body.message.is_empty() || !body.error.is_empty() => {
            (body.error, body.message)
        }
        _ => (
            String::new(),
            format!(
                "HTTP {status}: {}",
                text.chars().take(300).collect::<String>()
            ),
        ),
    };
    RemoteError::Status {
        status,
        code,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_say_what_they_are() {
        let body = r#"{"error": "x", "message": "bad token"}"#;
        assert_eq!(
            status_error(401, body).to_string(),
            "unauthorized: bad token"
        );
        assert_eq!(status_error(403, body).to_string(), "forbidden: bad token");
        assert_eq!(status_error(413, body).to_string(), "too large: bad token");
        assert_eq!(status_error(400, body).to_string(), "bad token");
        assert_eq!(
            status_error(413, "nope").to_string(),
            "too large: HTTP 413: nope"
        );
    }
}
