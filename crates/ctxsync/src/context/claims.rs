//! `ctxsync claim`, `ctxsync release` and `ctxsync who` (DESIGN §13), and the stale-view
//! notice (`behind`, `changed_sections`) that the CLI's `--json` answers carry.
//!
//! `claim` exits 0 when the lease was granted (or renewed) and 1 when another agent holds
//! it, printing the holder and expiry, so a script can race for a task with `&&`.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use ctxsync_store::{AgentPresence, ClaimOutcome, ReleaseOutcome, StaleView};
use serde_json::Value;

use super::env::{open, Env};
use super::now_ms;
use super::output::print_json;
use crate::{Acting, Common, InputError};

/// `ctxsync claim PATH --ttl 10m`.
#[derive(Args, Debug)]
pub struct ClaimArgs {
    /// What to claim: a list element or field, e.g.
    /// `project_state.active_tasks[id=task-7]` (dotted or JSON Pointer).
    pub path: String,
    /// How long the lease lasts: `500ms`, `30s`, `10m`, `2h` (a bare number is seconds);
    /// at most a day. Claiming again before it ends renews it.
    #[arg(long, default_value = "10m")]
    pub ttl: String,
    #[command(flatten)]
    pub acting: Acting,
    #[command(flatten)]
    pub common: Common,
}

/// `ctxsync release PATH`.
#[derive(Args, Debug)]
pub struct ReleaseArgs {
    /// The claimed path (as claimed, or its canonical form).
    pub path: String,
    #[command(flatten)]
    pub acting: Acting,
    #[command(flatten)]
    pub common: Common,
}

/// `ctxsync who`.
#[derive(Args, Debug)]
pub struct WhoArgs {
    #[command(flatten)]
    pub common: Common,
}

/// Parses a claim's ttl: a [`parse_duration`] from 1 ms to a day.
pub fn parse_ttl(text: &str) -> Result<u64, InputError> {
    let ms = parse_duration(text)?;
    if ms == 0 || ms > ctxsync_core::claims::MAX_TTL_MS {
        return Err(InputError(format!(
            "a claim lasts between 1 ms and a day, not {text:?}"
        )));
    }
    Ok(ms)
}

/// Parses a duration such as `10m`, `30s`, `1500ms`, `2h`, `1d` (bare: seconds), in ms.
pub fn parse_duration(text: &str) -> Result<u64, InputError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let bad = || {
        InputError(format!(
            "bad duration {text:?}: use a number with ms, s, m, h or d (e.g. 10m)"
        ))
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let scale = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(scale).ok_or_else(bad)
}

/// A duration in words: `42s`, `5m`, `3h`.
fn span(ms: u64) -> String {
    let s = ms / 1000;
    if s < 120 {
        format!("{s}s")
    } else if s < 7200 {
        format!("{}m", s / 60)
    } else if s < 2 * 86_400 {
        format!("{}h", s / 3600)
    } else {
        format!("{}d", s / 86_400)
    }
}

/// The agent a claim or release acts as, as every other write picks it.
fn acting_agent(env: &Env, acting: &Acting) -> anyhow::Result<String> {
    env.writer(acting.agent.as_deref())
}

/// What `agent` had not seen up to `revision`, recording that it has now: asked of the
/// embedded store (a server records it itself and puts it in its answers). A failure to
/// record presence never fails the command.
pub(crate) fn stale_view(env: &Env, agent: &str, revision: u64) -> Option<StaleView> {
    if env.remote.is_some() {
        return None;
    }
    match env.store.observe(&env.context, agent, revision) {
        Ok(view) => Some(view),
        Err(e) => {
            tracing::debug!(error = %e, "presence not recorded");
            None
        }
    }
}

/// The stale view of a command acting for `agent` against a server, asked *before* the
/// command's own request: the server records presence on every request, so asked after
/// it the answer would always be "nothing new". Only for `--json` answers (`wanted`),
/// which carry it; two small requests. `None` in embedded mode (see [`stale_view`]).
pub(crate) fn stale_before(env: &Env, agent: &str, wanted: bool) -> Option<StaleView> {
    if !wanted || env.remote.is_none() {
        return None;
    }
    let seen = env
        .store
        .head(&env.context)
        .and_then(|head| env.store.observe(&env.context, agent, head.revision));
    match seen {
        Ok(view) => Some(view),
        Err(e) => {
            tracing::debug!(error = %e, "stale view not asked for");
            None
        }
    }
}

/// `value` (a JSON object) with the stale view's fields added.
pub(crate) fn with_stale(mut value: Value, stale: Option<&StaleView>) -> Value {
    if let (Some(fields), Some(stale)) = (value.as_object_mut(), stale) {
        if let Ok(Value::Object(extra)) = serde_json::to_value(stale) {
            fields.extend(extra);
        }
    }
    value
}

pub fn claim(args: &ClaimArgs) -> Result<ExitCode> {
    let ttl_ms = parse_ttl(&args.ttl)?;
    let env = open(&args.common)?;
    let agent = acting_agent(&env, &args.acting)?;
    let before = stale_before(&env, &agent, args.common.json);
    let outcome = env.store.claim(&env.context, &agent, &args.path, ttl_ms)?;
    let stale = match before {
        Some(view) => Some(view),
        None => {
            let seen = match &outcome {
                ClaimOutcome::Granted { revision, .. } => *revision,
                ClaimOutcome::Held { .. } => env.store.head(&env.context)?.revision,
            };
            stale_view(&env, &agent, seen)
        }
    };
    let now = now_ms();
    if args.common.json {
        print_json(&with_stale(serde_json::to_value(&outcome)?, stale.as_ref()));
    } else {
        match &outcome {
            ClaimOutcome::Granted {
                revision,
                claim,
                renewed,
            } => outln!(
                "{} {} for {} until {} (in {}), revision {revision}",
                if *renewed { "renewed" } else { "claimed" },
                claim.path,
                claim.holder,
                claim.expires_at_ms,
                span(claim.expires_at_ms.saturating_sub(now))
            ),
            ClaimOutcome::Held { claim } => outln!(
                "{} is held by {} until {} (in {})",
                claim.path,
                claim.holder,
                claim.expires_at_ms,
                span(claim.expires_at_ms.saturating_sub(now))
            ),
        }
    }
    Ok(ExitCode::from(if outcome.granted() { 0 } else { 1 }))
}

pub fn release(args: &ReleaseArgs) -> Result<ExitCode> {
    let env = open(&args.common)?;
    let agent = acting_agent(&env, &args.acting)?;
    let before = stale_before(&env, &agent, args.common.json);
    let outcome = env.store.release(&env.context, &agent, &args.path)?;
    let stale = match before {
        Some(view) => Some(view),
        None => {
            let seen = match &outcome {
                ReleaseOutcome::Released { revision } => *revision,
                _ => env.store.head(&env.context)?.revision,
            };
            stale_view(&env, &agent, seen)
        }
    };
    if args.common.json {
        print_json(&with_stale(serde_json::to_value(&outcome)?, stale.as_ref()));
    } else {
        match &outcome {
            ReleaseOutcome::Released { revision } => {
                outln!("released {} (revision {revision})", args.path)
            }
            ReleaseOutcome::NotHeld => outln!("{agent} holds no claim on {}", args.path),
            ReleaseOutcome::HeldByOther { claim } => outln!(
                "{} is held by {}, not {agent}, until {}",
                claim.path,
                claim.holder,
                claim.expires_at_ms
            ),
        }
    }
    Ok(ExitCode::from(match outcome {
        ReleaseOutcome::Released { .. } => 0,
        _ => 1,
    }))
}

pub fn who(args: &WhoArgs) -> Result<ExitCode> {
    let env = open(&args.common)?;
    let now = now_ms();
    let agents = env.store.agents(&env.context, now)?;
    if args.common.json {
        print_json(&serde_json::json!({
            "context": env.context,
            "now_ms": now,
            "agents": agents,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    if agents.is_empty() {
        outln!("no agent has used context {:?} yet", env.context);
        return Ok(ExitCode::SUCCESS);
    }
    print_table(&agents, now);
    Ok(ExitCode::SUCCESS)
}

fn print_table(agents: &[AgentPresence], now: u64) {
    let rows: Vec<[String; 5]> = agents
        .iter()
        .map(|a| {
            let seen = if a.last_seen_ms == 0 {
                "never".to_owned()
            } else {
                format!("{} ago", span(now.saturating_sub(a.last_seen_ms)))
            };
            let seen = if a.away {
                format!("{seen} (away)")
            } else {
                seen
            };
            let claims = if a.claims.is_empty() {
                "-".to_owned()
            } else {
                a.claims
                    .iter()
                    .map(|c| {
                        format!(
                            "{} ({} left)",
                            c.path,
                            span(c.expires_at_ms.saturating_sub(now))
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let critical = if a.unseen_critical.is_empty() {
                "-".to_owned()
            } else {
                a.unseen_critical
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            };
            [a.agent.clone(), seen, a.lag.to_string(), claims, critical]
        })
        .collect();
    let header = ["AGENT", "LAST SEEN", "LAG", "CLAIMS", "UNSEEN CRITICAL"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out
    };
    outln!("{}", line(header));
    for row in &rows {
        outln!("{}", line([&row[0], &row[1], &row[2], &row[3], &row[4]]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_forms() {
        assert_eq!(parse_ttl("10m").unwrap(), 600_000);
        assert_eq!(parse_ttl("30s").unwrap(), 30_000);
        assert_eq!(parse_ttl("30").unwrap(), 30_000);
        assert_eq!(parse_ttl("250ms").unwrap(), 250);
        assert_eq!(parse_ttl("2h").unwrap(), 7_200_000);
        assert_eq!(parse_ttl("1d").unwrap(), 86_400_000);
        for bad in ["", "m", "10x", "0s", "2d", "-1s", "99999999999999999999d"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
