//! Claims and away handovers on the embedded store: each is decided and written inside
//! one write transaction, so of N processes racing for a claim exactly one revision
//! takes it (the claim change also carries a `from` test on the entry, the same CAS any
//! other backend relies on).

use std::time::Instant;

use ctxsync_core::claims::{expired_claims_of, plan_claim, plan_release, ClaimPlan, ReleasePlan};
use ctxsync_core::push::Strategy;
use ctxsync_core::{Change, Level, Ownership, Path, PushRequest};
use serde_json::{json, Value};

use super::now_ms;
use super::writer::{load, push_with, Writer};
use crate::error::StoreError;
use crate::types::*;

/// The agent the store writes its own maintenance revisions as (away handovers).
pub const SYSTEM_AGENT: &str = "ctxsync";

fn claim_error(e: ctxsync_core::claims::ClaimError) -> StoreError {
    StoreError::Invalid(e.to_string())
}

impl Writer {
    pub(crate) fn claim(
        &mut self,
        context: &str,
        agent: &str,
        path: &str,
        ttl_ms: u64,
    ) -> Result<ClaimOutcome, StoreError> {
        super::validate_agent_name(agent)?;
        self.transaction(context, |tx, docs, shared| {
            let now = now_ms();
            let cached = load(tx, docs, context)?;
            let base = cached.head.revision;
            let plan = plan_claim(&cached.doc, agent, path, ttl_ms, now).map_err(claim_error)?;
            let (change, claim, renewed) = match plan {
                ClaimPlan::Held(claim) => return Ok(ClaimOutcome::Held { claim }),
                ClaimPlan::Take {
                    change,
                    claim,
                    renewed,
                } => (change, claim, renewed),
            };
            // Claiming is writing: an agent may claim only what it may write.
            let claimed =
                Path::parse(&claim.path).map_err(|e| StoreError::Invalid(e.to_string()))?;
            if let Err(not_owner) = shared.options.ownership.check(agent, &claimed) {
                return Err(StoreError::Forbidden(format!(
                    "{agent} may not claim {} (owned by {} under rule {})",
                    claim.path,
                    not_owner.owners.join(", "),
                    not_owner.rule
                )));
            }
            let request = PushRequest {
                agent: agent.to_owned(),
                level: Level::Checkpoint,
                base_revision: Some(base),
                request_id: None,
                strategy: Strategy::Atomic,
                summary: format!(
                    "{} {} until {}",
                    if renewed { "renew claim on" } else { "claim" },
                    claim.path,
                    claim.expires_at_ms
                ),
                changes: vec![change],
            };
            let response = push_with(
                tx,
                docs,
                shared,
                context,
                request,
                Instant::now(),
                &shared.options.ownership,
                true,
            )?;
            if response.applied.is_empty() {
                // The entry's test failed or a rule refused it: report who holds it now.
                let cached = load(tx, docs, context)?;
                if let Some(c) = ctxsync_core::claims::stored_claim(&cached.doc, &claim.path) {
                    if c.is_live(now) {
                        return Ok(ClaimOutcome::Held {
                            claim: ClaimView::new(&claim.path, &c),
                        });
                    }
                }
                let why = response
                    .rejected
                    .first()
                    .map(|r| format!("{} (rule {})", r.reason, r.rule))
                    .or_else(|| {
                        response
                            .conflicts
                            .first()
                            .map(|c| c.reason.as_str().to_owned())
                    })
                    .unwrap_or_else(|| "nothing applied".into());
                return Err(StoreError::Forbidden(format!(
                    "cannot claim {}: {why}",
                    claim.path
                )));
            }
            Ok(ClaimOutcome::Granted {
                revision: response.revision,
                claim,
                renewed,
            })
        })
    }

    pub(crate) fn release(
        &mut self,
        context: &str,
        agent: &str,
        path: &str,
    ) -> Result<ReleaseOutcome, StoreError> {
        super::validate_agent_name(agent)?;
        self.transaction(context, |tx, docs, shared| {
            let now = now_ms();
            let cached = load(tx, docs, context)?;
            let base = cached.head.revision;
            let change = match plan_release(&cached.doc, agent, path, now).map_err(claim_error)? {
                ReleasePlan::NotHeld => return Ok(ReleaseOutcome::NotHeld),
                ReleasePlan::HeldByOther(claim) => {
                    return Ok(ReleaseOutcome::HeldByOther { claim })
                }
                ReleasePlan::Remove(change) => change,
            };
            let request = PushRequest {
                agent: agent.to_owned(),
                level: Level::Checkpoint,
                base_revision: Some(base),
                request_id: None,
                strategy: Strategy::Atomic,
                summary: format!("release claim on {}", path),
                changes: vec![change],
            };
            let response = push_with(
                tx,
                docs,
                shared,
                context,
                request,
                Instant::now(),
                &shared.options.ownership,
                true,
            )?;
            if response.applied.is_empty() {
                let why = response
                    .rejected
                    .first()
                    .map(|r| format!("{} (rule {})", r.reason, r.rule))
                    .unwrap_or_else(|| "nothing applied".into());
                return Err(StoreError::Forbidden(format!(
                    "cannot release {path}: {why}"
                )));
            }
            Ok(ReleaseOutcome::Released {
                revision: response.revision,
            })
        })
    }

    /// Releases the expired claims of each agent in `away` and writes one handover stub
    /// per agent into `communication.handovers`, all in one revision by
    /// [`SYSTEM_AGENT`]. Idempotent: once released, there is nothing left to hand over.
    pub(crate) fn hand_over_away(
        &mut self,
        context: &str,
        away: Vec<String>,
    ) -> Result<Option<u64>, StoreError> {
        self.transaction(context, |tx, docs, shared| {
            let now = now_ms();
            let cached = load(tx, docs, context)?;
            let base = cached.head.revision;
            let mut changes = Vec::new();
            let mut stubs = Vec::new();
            for agent in &away {
                let expired = expired_claims_of(&cached.doc, agent, now);
                if expired.is_empty() {
                    continue;
                }
                for claim in &expired {
                    let entry = ctxsync_core::claims::entry_path(&claim.path);
                    let current = ctxsync_core::get(&cached.doc, &entry).cloned();
                    changes.push(Change {
                        path: entry,
                        op: ctxsync_core::Op::Remove,
                        expect: current.map(ctxsync_core::Expect::Value),
                    });
                }
                stubs.push(json!({
                    "from": agent,
                    "to": Value::Null,
                    "reason": "away",
                    "claims": expired.iter().map(|c| c.path.clone()).collect::<Vec<_>>(),
                    "at": now,
                }));
            }
            if changes.is_empty() {
                return Ok(None);
            }
            let handovers = cached
                .doc
                .get("communication")
                .and_then(|c| c.get("handovers"));
            match handovers {
                Some(Value::Array(_)) => {
                    for stub in stubs {
                        changes.push(Change::set(
                            Path::parse("communication.handovers[-]")
                                .map_err(|e| StoreError::Invalid(e.to_string()))?,
                            stub,
                        ));
                    }
                }
                Some(_) => {
                    tracing::warn!(
                        context,
                        "communication.handovers is not a list; away claims released without a stub"
                    );
                }
                None => changes.push(Change::set(
                    Path::parse("communication.handovers")
                        .map_err(|e| StoreError::Invalid(e.to_string()))?,
                    Value::Array(stubs),
                )),
            }
            let request = PushRequest {
                agent: SYSTEM_AGENT.to_owned(),
                level: Level::Checkpoint,
                base_revision: Some(base),
                request_id: None,
                strategy: Strategy::Atomic,
                summary: format!(
                    "hand over the expired claims of away agents: {}",
                    away.join(", ")
                ),
                changes,
            };
            // The store's own maintenance: not subject to agents' ownership rules.
            let open = Ownership::default();
            let response = push_with(
                tx,
                docs,
                shared,
                context,
                request,
                Instant::now(),
                &open,
                false,
            )?;
            Ok((!response.applied.is_empty()).then_some(response.revision))
        })
    }
}
