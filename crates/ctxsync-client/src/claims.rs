//! Claims, presence and critical notices over HTTP (DESIGN §13): the client side of
//! `/v1/contexts/{ctx}/claims`, `/agents`, `/agents/{agent}/critical` and `/seen`.
//! The server acts as the token's agent.

use ctxsync_core::records::{
    AgentPresence, ClaimOutcome, CriticalNotice, ReleaseOutcome, StaleView,
};
use serde::Deserialize;
use serde_json::json;

use crate::remote::{ctx_path, read_body, status_error, RemoteClient, RemoteError};

fn decode<T: serde::de::DeserializeOwned>(status: u16, text: &str) -> Result<T, RemoteError> {
    serde_json::from_str(text).map_err(|e| RemoteError::Decode(format!("HTTP {status}: {e}")))
}

impl RemoteClient {
    /// Claims `path` for `ttl_ms`; a 409 (held by another agent) is an answer.
    pub fn claim(
        &self,
        context: &str,
        path: &str,
        ttl_ms: u64,
    ) -> Result<ClaimOutcome, RemoteError> {
        let r = self.send(
            "POST",
            &ctx_path(context, "/claims"),
            &json!({"path": path, "ttl_ms": ttl_ms}),
        )?;
        let status = r.status().as_u16();
        let text = read_body(r)?;
        match status {
            200 | 409 => decode(status, &text),
            _ => Err(status_error(status, &text)),
        }
    }

    /// Releases the token's agent's claim on `path`; a 409 (held by another) is an answer.
    pub fn release(&self, context: &str, path: &str) -> Result<ReleaseOutcome, RemoteError> {
        let r = self.send(
            "DELETE",
            &ctx_path(context, "/claims"),
            &json!({"path": path}),
        )?;
        let status = r.status().as_u16();
        let text = read_body(r)?;
        match status {
            200 | 409 => decode(status, &text),
            _ => Err(status_error(status, &text)),
        }
    }

    pub fn agents(&self, context: &str) -> Result<Vec<AgentPresence>, RemoteError> {
        #[derive(Deserialize)]
        struct Body {
            agents: Vec<AgentPresence>,
        }
        let r = self.get(&ctx_path(context, "/agents"), &[])?;
        Ok(self.expect::<Body>(r, &[200])?.agents)
    }

    pub fn unseen_critical(
        &self,
        context: &str,
        agent: &str,
        mark_seen: bool,
    ) -> Result<Vec<CriticalNotice>, RemoteError> {
        #[derive(Deserialize)]
        struct Body {
            notices: Vec<CriticalNotice>,
        }
        let r = self.get(
            &ctx_path(context, &format!("/agents/{agent}/critical")),
            &[("mark_seen", mark_seen.to_string())],
        )?;
        Ok(self.expect::<Body>(r, &[200])?.notices)
    }

    /// Tells the server the token's agent saw `revision`; returns what it had not seen.
    pub fn seen(&self, context: &str, revision: u64) -> Result<StaleView, RemoteError> {
        let r = self.send(
            "POST",
            &ctx_path(context, "/seen"),
            &json!({"revision": revision}),
        )?;
        self.expect(r, &[200])
    }
}
