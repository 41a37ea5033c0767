//! The claim tools: `claim` and `release` (leases on a list element or field, one CAS
//! revision each, decided by the store) and `who` (presence: last seen, lag, claims,
//! unseen critical revisions). A claim held by another agent is an error result naming
//! the holder and the expiry.

use ctxsync_store::{ClaimOutcome, ReleaseOutcome};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::tools::{args, parse_path, Call, ContextOnly, ToolError, ToolResult};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimArgs {
    #[allow(dead_code)]
    #[serde(default)]
    context: Option<String>,
    path: String,
    ttl_seconds: Option<u64>,
}

/// A claim's lease when the call names none: ten minutes.
pub const DEFAULT_TTL_SECONDS: u64 = 600;

pub fn claim(call: &Call, arguments: &Map<String, Value>) -> ToolResult {
    let a: ClaimArgs = args(arguments)?;
    let ttl = a.ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
    if ttl == 0 || ttl > 86_400 {
        return Err(ToolError::Input(format!(
            "ttl_seconds must be between 1 and 86400 (a day), not {ttl}"
        )));
    }
    parse_path(&a.path)?;
    let agent = call.agent()?.to_owned();
    match call
        .store
        .claim(&call.context, &agent, &a.path, ttl * 1000)?
    {
        ClaimOutcome::Granted {
            revision,
            claim,
            renewed,
        } => Ok(json!({"revision": revision, "granted": true, "renewed": renewed, "claim": claim})),
        ClaimOutcome::Held { claim } => {
            let head = call.store.head(&call.context)?;
            let left = claim.expires_at_ms.saturating_sub(call.store.now_ms()) / 1000;
            Err(ToolError::Refused {
                message: format!(
                    "{} is claimed by {} for another {left} s (until {} ms since the epoch)",
                    claim.path, claim.holder, claim.expires_at_ms
                ),
                detail: json!({"revision": head.revision, "granted": false, "renewed": false, "claim": claim}),
            })
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseArgs {
    #[allow(dead_code)]
    #[serde(default)]
    context: Option<String>,
    path: String,
}

pub fn release(call: &Call, arguments: &Map<String, Value>) -> ToolResult {
    let a: ReleaseArgs = args(arguments)?;
    parse_path(&a.path)?;
    let agent = call.agent()?.to_owned();
    match call.store.release(&call.context, &agent, &a.path)? {
        ReleaseOutcome::Released { revision } => {
            Ok(json!({"revision": revision, "released": true, "outcome": "released"}))
        }
        ReleaseOutcome::NotHeld => {
            let head = call.store.head(&call.context)?;
            Ok(json!({"revision": head.revision, "released": false, "outcome": "not_held"}))
        }
        ReleaseOutcome::HeldByOther { claim } => {
            let head = call.store.head(&call.context)?;
            Err(ToolError::Refused {
                message: format!(
                    "{} is claimed by {}, not by {agent}",
                    claim.path, claim.holder
                ),
                detail: json!({"revision": head.revision, "released": false, "outcome": "held_by_other", "claim": claim}),
            })
        }
    }
}

pub fn who(call: &Call, arguments: &Map<String, Value>) -> ToolResult {
    let _: ContextOnly = args(arguments)?;
    let head = call.store.head(&call.context)?;
    let agents = call.store.agents(&call.context, call.store.now_ms())?;
    Ok(json!({"revision": head.revision, "agents": agents}))
}
