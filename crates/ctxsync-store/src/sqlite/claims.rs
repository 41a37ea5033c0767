//! Claims and away handovers on the embedded store. A claim is one revision guarded by a
//! `from` test on its entry (a CAS): pushes are decided one after another under SQLite's
//! write lock, also across processes, so of N racing claimants exactly one test passes.

use std::time::Instant;

use ctxsync_core::claims::{expired_claims_of, plan_claim, plan_release, ClaimPlan, ReleasePlan};
use ctxsync_core::push::Strategy;
use ctxsync_core::{Change, Level, Ownership, Path, PushRequest};
use serde_json::{json, Value};

use super::now_ms;
use super::push::{load, push_with};
use super::writer::Writer;
use super::SqliteStore;
use crate::error::StoreError;
use crate::types::*;
use crate::Store;

/// The agent the store writes its own maintenance revisions as (away handovers).
pub const SYSTEM_AGENT: &str = "ctxsync";

fn claim_error(e: ctxsync_core::claims::ClaimError) -> StoreError {
    StoreError::Invalid(e.to_string())
}

/// How often a claim or release looks again when the entry changed between its read
/// and its commit (another claimant, a renewal): each retry means someone else's revision
/// landed, so this bounds only a pathological storm.
const CAS_ATTEMPTS: usize = 16;

impl SqliteStore {
    /// A claim as one CAS revision: decided against the newest document read without the
    /// writer (a live claim of another agent is answered `Held` at once, which costs the
    /// writer nothing), then pushed with a `from` test on the claim entry, so it is group
    /// committed with other pushes and claims; of several claimants in one batch exactly
    /// one passes the test. A failed test means the entry moved: look again.
    pub(crate) fn claim_cas(
        &self,
        context: &str,
        agent: &str,
        path: &str,
        ttl_ms: u64,
    ) -> Result<ClaimOutcome, StoreError> {
        super::validate_agent_name(agent)?;
        for _ in 0..CAS_ATTEMPTS {
            let current = self.with_reader(|conn| self.current(conn, context))?;
            let plan =
                plan_claim(&current.doc, agent, path, ttl_ms, now_ms()).map_err(claim_error)?;
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
            if let Err(not_owner) = self.shared.options.ownership.check(agent, &claimed) {
                return Err(StoreError::Forbidden(format!(
                    "{agent} may not claim {} (owned by {} under rule {})",
                    claim.path,
                    not_owner.owners.join(", "),
                    not_owner.rule
                )));
            }
            let response = self.push(
                context,
                PushRequest {
                    agent: agent.to_owned(),
                    level: Level::Checkpoint,
                    base_revision: None,
                    request_id: None,
                    strategy: Strategy::Atomic,
                    summary: format!(
                        "{} {} until {}",
                        if renewed { "renew claim on" } else { "claim" },
                        claim.path,
                        claim.expires_at_ms
                    ),
                    changes: vec![change],
                },
            )?;
            if !response.applied.is_empty() {
                return Ok(ClaimOutcome::Granted {
                    revision: response.revision,
                    claim,
                    renewed,
                });
            }
            // `claimed`: another claimant's revision landed first; look again (and see it).
            if let Some(r) = response.rejected.iter().find(|r| r.reason != "claimed") {
                return Err(StoreError::Forbidden(format!(
                    "cannot claim {}: {} (rule {})",
                    claim.path, r.reason, r.rule
                )));
            }
        }
        Err(StoreError::Refused(format!(
            "the claim on {path} kept changing under {CAS_ATTEMPTS} attempts; try again"
        )))
    }

    /// A release as one CAS revision (a `remove` tested with `from`), like [`Self::claim_cas`].
    pub(crate) fn release_cas(
        &self,
        context: &str,
        agent: &str,
        path: &str,
    ) -> Result<ReleaseOutcome, StoreError> {
        super::validate_agent_name(agent)?;
        for _ in 0..CAS_ATTEMPTS {
            let current = self.with_reader(|conn| self.current(conn, context))?;
            let change =
                match plan_release(&current.doc, agent, path, now_ms()).map_err(claim_error)? {
                    ReleasePlan::NotHeld => return Ok(ReleaseOutcome::NotHeld),
                    ReleasePlan::HeldByOther(claim) => {
                        return Ok(ReleaseOutcome::HeldByOther { claim })
                    }
                    ReleasePlan::Remove(change) => change,
                };
            let response = self.push(
                context,
                PushRequest {
                    agent: agent.to_owned(),
                    level: Level::Checkpoint,
                    base_revision: None,
                    request_id: None,
                    strategy: Strategy::Atomic,
                    summary: format!("release claim on {path}"),
                    changes: vec![change],
                },
            )?;
            if !response.applied.is_empty() {
                return Ok(ReleaseOutcome::Released {
                    revision: response.revision,
                });
            }
            if let Some(r) = response.rejected.iter().find(|r| r.reason != "claimed") {
                return Err(StoreError::Forbidden(format!(
                    "cannot release {path}: {} (rule {})",
                    r.reason, r.rule
                )));
            }
        }
        Err(StoreError::Refused(format!(
            "the claim on {path} kept changing under {CAS_ATTEMPTS} attempts; try again"
        )))
    }
}

impl Writer {
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
            let communication = cached.doc.get("communication");
            let handovers = communication.and_then(|c| c.get("handovers"));
            match handovers {
                // `communication` is some other value: nowhere to put a stub.
                _ if communication.is_some_and(|c| !c.is_object()) => {
                    tracing::warn!(
                        context,
                        "communication is not an object; away claims released without a stub"
                    );
                }
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
