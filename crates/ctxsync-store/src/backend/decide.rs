//! Deciding a push against a backend's in-memory copy of the newest document, and the
//! requests the store makes on its own (revert, settling a conflict, away handovers,
//! claims). The backend supplies the writes since the base and writes what is decided.

use std::time::Instant;

use ctxsync_core::claims::{expired_claims_of, plan_claim, plan_release, ClaimPlan, ReleasePlan};
use ctxsync_core::limits::{Budget, LimitError};
use ctxsync_core::push::{evaluate_at, PriorWrite, Strategy};
use ctxsync_core::{Change, Edit, Level, Ownership, Path, PushRequest, PushResponse};
use serde_json::{json, Value};

use crate::error::StoreError;
use crate::types::*;

/// The newest document of a context as a backend keeps it: its head, the document, the
/// structural hashes kept along the edits, and what was written since the last snapshot.
#[derive(Debug)]
pub struct Cached {
    pub head: Head,
    pub doc: Value,
    /// The structural hashes of `doc`, kept by a writer along the edits it applies
    /// (empty in readers' copies, which never hash).
    pub tree: ctxsync_core::ChecksumTree,
    /// Revisions and op-log bytes written since the last snapshot (the snapshot policy).
    pub revisions_since_snapshot: u64,
    pub log_bytes_since_snapshot: u64,
}

impl Cached {
    pub fn new(head: Head, doc: Value) -> Self {
        Self {
            head,
            doc,
            tree: ctxsync_core::ChecksumTree::new(),
            revisions_since_snapshot: 0,
            log_bytes_since_snapshot: 0,
        }
    }

    /// Whether a snapshot is due (and resets the counters when it is): once at least
    /// `every` revisions *and* a document's worth of op-log bytes were written since the
    /// last one, so a snapshot costs O(change) per push on average and a read replays at
    /// most about a document's worth of log.
    pub fn take_snapshot_due(&mut self, every: u64) -> bool {
        let due = self.revisions_since_snapshot >= every.max(1)
            && self.log_bytes_since_snapshot >= self.head.size;
        if due {
            self.revisions_since_snapshot = 0;
            self.log_bytes_since_snapshot = 0;
        }
        due
    }
}

impl Clone for Cached {
    /// A copy for readers: the document without the writer's hashes.
    fn clone(&self) -> Self {
        Self::new(self.head.clone(), self.doc.clone())
    }
}

/// The checks every push gets before anything is read: an agent that is a name, and a
/// request id of sane length. Returns the request's fingerprint when it has an id.
pub fn check_request(request: &PushRequest) -> Result<Option<String>, StoreError> {
    if request.agent.trim().is_empty() {
        return Err(StoreError::Invalid("a push needs an `agent`".into()));
    }
    crate::validate_agent_name(&request.agent)?;
    if request
        .request_id
        .as_deref()
        .is_some_and(|id| id.trim().is_empty() || id.len() > 128)
    {
        return Err(StoreError::Invalid(
            "a request_id is 1-128 characters (a ULID or UUID); leave it out for none".into(),
        ));
    }
    Ok(request.request_id.as_ref().map(|_| fingerprint(request)))
}

/// What a request asks for, apart from its key: a replay with the same key must ask for the
/// same thing, or it is a different request that reused a key.
pub fn fingerprint(request: &PushRequest) -> String {
    let mut value = serde_json::to_value(request).unwrap_or(Value::Null);
    if let Some(fields) = value.as_object_mut() {
        fields.remove("request_id");
    }
    // The older format on purpose: keys stored before the structural checksum carry it.
    ctxsync_core::legacy_checksum(&value)
}

/// The stored answer to a request id, replayed; refused when the key came with other
/// changes the first time (keys stored before fingerprints replay as they always did).
pub fn replay_stored(
    id: &str,
    stored: &str,
    stored_fingerprint: Option<&str>,
    fingerprint: Option<&str>,
) -> Result<PushResponse, StoreError> {
    if stored_fingerprint.is_some() && stored_fingerprint != fingerprint {
        return Err(StoreError::RequestIdReused(id.to_owned()));
    }
    let mut response: PushResponse = serde_json::from_str(stored)
        .map_err(|e| StoreError::Corrupt(format!("stored answer: {e}")))?;
    response.replayed = true;
    Ok(response)
}

/// `Gone` when `base` is below the horizon.
pub fn check_base(request: &PushRequest, head: &Head) -> Result<(), StoreError> {
    match request.base_revision {
        Some(base) if base < head.horizon => Err(StoreError::Gone {
            requested: base,
            horizon: head.horizon,
        }),
        _ => Ok(()),
    }
}

/// The range of revisions whose writes a push must be checked against: `(base, head]`,
/// or `None` when it is based on the head (or on nothing).
pub fn since_base_range(request: &PushRequest, head: &Head) -> Option<(u64, u64)> {
    match request.base_revision {
        Some(base) if base < head.revision => Some((base, head.revision)),
        _ => None,
    }
}

/// The writes of op-log entries, as the conflict check wants them.
pub fn prior_writes(entries: Vec<LogEntry>) -> Vec<PriorWrite> {
    entries
        .into_iter()
        .flat_map(|entry| {
            let (revision, agent) = (entry.revision, entry.agent);
            entry.edits.into_iter().map(move |e| PriorWrite {
                revision,
                agent: agent.clone(),
                path: e.path,
            })
        })
        .collect()
}

/// A revision a push decided to write, ready for the op log.
#[derive(Debug, Clone)]
pub struct DecidedRevision {
    pub revision: u64,
    pub agent: String,
    pub level: Level,
    pub ts_ms: u64,
    pub summary: String,
    pub request_id: Option<String>,
    /// The edits, as the JSON text the op log stores.
    pub edits_json: String,
    pub edits: Vec<Edit>,
    pub checksum: String,
    pub size: u64,
    /// The sections written, as the JSON text the op log stores, and as a list.
    pub sections_json: String,
    pub sections: Vec<String>,
}

impl DecidedRevision {
    /// The entry the stale-view and conflict caches keep of it.
    pub fn recent_entry(&self) -> recent_entry::Entry {
        recent_entry::Entry {
            revision: self.revision,
            agent: self.agent.as_str().into(),
            sections: self.sections.clone().into(),
            paths: self.edits.iter().map(|e| e.path.clone()).collect(),
        }
    }
}

use super::recent as recent_entry;

/// What [`decide`] answers: the response (its conflicts still without ids), the revision
/// to write (none when nothing applied), and the sync sample to record.
#[derive(Debug)]
pub struct Decided {
    pub response: PushResponse,
    pub revision: Option<DecidedRevision>,
    pub sample: SyncSample,
    /// Whether the deferred conflicts are to be stored (strategy `defer`).
    pub defer: bool,
}

/// The limits a backend decides pushes within.
#[derive(Debug, Clone, Copy)]
pub struct DecideLimits<'a> {
    pub ownership: &'a Ownership,
    pub max_document_bytes: u64,
    /// Enforce live claims (at the store's clock).
    pub enforce_claims: bool,
    /// Every new revision must satisfy this, when set.
    pub schema: Option<&'a crate::ContextSchema>,
    /// An agent's sync: stamp the seed's `last_sync` and `sync_level` (not for reverts,
    /// which must equal their target, nor for the store's own housekeeping).
    pub stamp_seed_fields: bool,
}

/// Takes a refused push's edits back out of the writer's document and its checksums.
fn undo_edits(cached: &mut Cached, edits: &[Edit]) -> Result<(), StoreError> {
    ctxsync_core::apply::undo(&mut cached.doc, edits)
        .map_err(|e| StoreError::Corrupt(format!("undo of a refused push: {e}")))?;
    cached
        .tree
        .note_all(&edits.iter().rev().map(Edit::inverse).collect::<Vec<_>>());
    Ok(())
}

/// Decides `request` against `cached` (the newest document, moved along in place when the
/// push applies): evaluation by [`ctxsync_core::push::evaluate_at`], the checksum along
/// the edited paths, the quota (undone when over), the new head. `since_base` are the
/// writes after the request's base revision.
pub fn decide(
    cached: &mut Cached,
    request: PushRequest,
    since_base: &[PriorWrite],
    limits: DecideLimits<'_>,
    now: u64,
    started: Instant,
) -> Result<Decided, StoreError> {
    let budget = Budget::for_document(cached.head.size, limits.max_document_bytes);
    let mut evaluation = evaluate_at(
        &mut cached.doc,
        &request,
        cached.head.revision,
        since_base,
        limits.ownership,
        budget,
        limits.enforce_claims.then_some(now),
    )
    .map_err(|e| match e.limit {
        Some(LimitError::TooLarge { size, limit }) => StoreError::TooLarge { size, limit },
        // Too deep is a malformed change (400), like a path with too many segments.
        Some(LimitError::TooDeep { .. }) => StoreError::Invalid(e.to_string()),
        Some(_) => StoreError::OverLimit(e.to_string()),
        None => StoreError::Invalid(e.to_string()),
    })?;

    let mut response = PushResponse {
        revision: cached.head.revision,
        applied: evaluation.applied,
        conflicts: evaluation.conflicts,
        rejected: evaluation.rejected,
        checksum: cached.head.checksum.clone(),
        replayed: false,
        stale: None,
    };
    let mut decided_revision = None;
    // What the agent changed, for the sections a revision is said to touch (the stamps
    // below would otherwise be in every one).
    let agent_edits = evaluation.edits.len();
    if !evaluation.edits.is_empty() && limits.stamp_seed_fields && request.agent != SYSTEM_AGENT {
        // In the same revision, so the stamp and what it stamps never part.
        let stamped = super::seed_fields::stamp(&mut cached.doc, request.level, now)?;
        evaluation.edits.extend(stamped);
    }
    if !evaluation.edits.is_empty() {
        // The checksum is updated along the edited paths: O(change), not O(document).
        cached.tree.note_all(&evaluation.edits);
        let (sum, size) = cached.tree.refresh(&cached.doc);
        let limit = limits.max_document_bytes;
        if size > limit {
            undo_edits(cached, &evaluation.edits)?;
            return Err(StoreError::TooLarge { size, limit });
        }
        // O(document) when a schema is configured: the price of validating every revision.
        if let Some(schema) = limits.schema {
            if let Err(violation) = schema.check(&cached.doc) {
                undo_edits(cached, &evaluation.edits)?;
                return Err(violation);
            }
        }
        let revision = cached.head.revision + 1;
        let edits_json = serde_json::to_string(&evaluation.edits).map_err(corrupt)?;
        let sections = ctxsync_core::records::sections_of(&evaluation.edits[..agent_edits]);
        let sections_json = serde_json::to_string(&sections).map_err(corrupt)?;
        let summary = if request.summary.is_empty() {
            let n = response.applied.len();
            let changes = if n == 1 { "change" } else { "changes" };
            format!("{n} {changes} by {}", request.agent)
        } else {
            request.summary.clone()
        };
        cached.head.revision = revision;
        cached.head.checksum = sum.clone();
        cached.head.size = size;
        cached.revisions_since_snapshot += 1;
        cached.log_bytes_since_snapshot += edits_json.len() as u64;
        response.revision = revision;
        response.checksum = sum.clone();
        decided_revision = Some(DecidedRevision {
            revision,
            agent: request.agent.clone(),
            level: request.level,
            ts_ms: now,
            summary,
            request_id: request.request_id.clone(),
            edits_json,
            edits: evaluation.edits,
            checksum: sum,
            size,
            sections_json,
            sections,
        });
    }
    let sample = SyncSample {
        agent: request.agent,
        level: request.level,
        timestamp_ms: now,
        duration_us: started.elapsed().as_micros() as u64,
        outcome: outcome_of(&response),
        conflict_paths: response.conflicts.iter().map(|c| c.path.clone()).collect(),
    };
    Ok(Decided {
        response,
        revision: decided_revision,
        sample,
        defer: request.strategy == Strategy::Defer,
    })
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// The outcome a push's sync sample records.
pub fn outcome_of(response: &PushResponse) -> SyncOutcome {
    if !response.conflicts.is_empty() {
        SyncOutcome::Conflict
    } else if !response.rejected.is_empty() {
        SyncOutcome::Rejected
    } else {
        SyncOutcome::Ok
    }
}

/// The ownership rules an actor's revert or settlement is checked under: none for an
/// admin, the store's otherwise.
pub fn ownership_for<'a>(
    actor: &Actor,
    store: &'a Ownership,
    open: &'a Ownership,
) -> &'a Ownership {
    if actor.role == Role::Admin {
        open
    } else {
        store
    }
}

/// The forced push that settles conflict `id` as "mine".
pub fn resolve_request(agent: &str, id: u64, conflict: &ctxsync_core::Conflict) -> PushRequest {
    PushRequest {
        agent: agent.to_owned(),
        level: Level::Checkpoint,
        base_revision: None,
        request_id: None,
        strategy: Strategy::Force,
        summary: format!("resolve conflict {id} at {} (mine)", conflict.path),
        changes: vec![ctxsync_core::push::force_change(conflict)],
    }
}

/// Who may settle a conflict stored for `owner`.
pub fn check_settler(actor: &Actor, owner: &str, id: u64) -> Result<(), StoreError> {
    if actor.role == Role::Viewer {
        return Err(StoreError::Forbidden(
            "a viewer cannot settle conflicts".into(),
        ));
    }
    if owner != actor.agent && actor.role != Role::Admin {
        return Err(StoreError::Forbidden(format!(
            "conflict {id} is {owner}'s to settle (or an admin's), not {}'s",
            actor.agent
        )));
    }
    Ok(())
}

/// A "mine" settlement that was rejected is refused as a whole.
pub fn check_settled(agent: &str, response: &PushResponse) -> Result<(), StoreError> {
    match response.rejected.first() {
        Some(rejected) => Err(StoreError::Invalid(format!(
            "{agent} may not write {} (owners: {})",
            rejected.path,
            rejected.owners.join(", ")
        ))),
        None => Ok(()),
    }
}

/// The checks of a revert to `to` against the head.
pub fn check_revert(actor: &Actor, to: u64, head: &Head) -> Result<(), StoreError> {
    if actor.role == Role::Viewer {
        return Err(StoreError::Forbidden("a viewer cannot revert".into()));
    }
    if to > head.revision {
        return Err(StoreError::Future {
            requested: to,
            current: head.revision,
        });
    }
    if to < head.horizon {
        return Err(StoreError::Gone {
            requested: to,
            horizon: head.horizon,
        });
    }
    Ok(())
}

/// The all-or-nothing push that makes the document `current` equal to `target` (the
/// document at revision `to`).
pub fn revert_request(agent: &str, to: u64, current: &Value, target: &Value) -> PushRequest {
    PushRequest {
        agent: agent.to_owned(),
        level: Level::Checkpoint,
        base_revision: None,
        request_id: None,
        // All or nothing: half a revert is a state no revision ever had.
        strategy: Strategy::Atomic,
        summary: format!("revert to revision {to}"),
        changes: whole_key_changes(current, target),
    }
}

/// The changes that turn `from` into `to` exactly: whole top-level values, so list order
/// and everything else come back byte for byte.
pub fn whole_key_changes(from: &Value, to: &Value) -> Vec<Change> {
    let (Some(from), Some(to)) = (from.as_object(), to.as_object()) else {
        return vec![Change::set(Path::root(), to.clone())];
    };
    let mut changes = Vec::new();
    for key in from.keys() {
        if !to.contains_key(key) {
            changes.push(Change {
                path: Path::root().key(key),
                op: ctxsync_core::Op::Remove,
                expect: None,
            });
        }
    }
    for (key, value) in to {
        if from.get(key) != Some(value) {
            changes.push(Change::set(Path::root().key(key), value.clone()));
        }
    }
    changes
}

/// The agent the store writes its own maintenance revisions as (away handovers).
pub const SYSTEM_AGENT: &str = "ctxsync";

/// The one revision (by [`SYSTEM_AGENT`], based on `base`) that releases the expired
/// claims of each agent in `away` and writes one handover stub per agent into
/// `communication.handovers`; `None` when there is nothing to hand over.
pub fn handover_request(
    context: &str,
    doc: &Value,
    base: u64,
    away: &[String],
    now: u64,
) -> Result<Option<PushRequest>, StoreError> {
    let mut changes = Vec::new();
    let mut stubs = Vec::new();
    for agent in away {
        let expired = expired_claims_of(doc, agent, now);
        if expired.is_empty() {
            continue;
        }
        for claim in &expired {
            let entry = ctxsync_core::claims::entry_path(&claim.path);
            let current = ctxsync_core::get(doc, &entry).cloned();
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
    let communication = doc.get("communication");
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
    Ok(Some(PushRequest {
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
    }))
}

fn claim_error(e: ctxsync_core::claims::ClaimError) -> StoreError {
    StoreError::Invalid(e.to_string())
}

/// How often a claim or release looks again when the entry changed between its read
/// and its commit (another claimant, a renewal): each retry means someone else's revision
/// landed, so this bounds only a pathological storm.
const CAS_ATTEMPTS: usize = 16;

/// A claim as one CAS revision: decided against the newest document (`current`; a live
/// claim of another agent is answered `Held` at once), then pushed with a `from` test on
/// the claim entry, so of several claimants exactly one passes the test. A failed test
/// means the entry moved: look again.
pub fn claim_cas(
    ownership: &Ownership,
    agent: &str,
    path: &str,
    ttl_ms: u64,
    now: impl Fn() -> u64,
    current: impl Fn() -> Result<Value, StoreError>,
    push: impl Fn(PushRequest) -> Result<PushResponse, StoreError>,
) -> Result<ClaimOutcome, StoreError> {
    crate::validate_agent_name(agent)?;
    for _ in 0..CAS_ATTEMPTS {
        let doc = current()?;
        let plan = plan_claim(&doc, agent, path, ttl_ms, now()).map_err(claim_error)?;
        let (change, claim, renewed) = match plan {
            ClaimPlan::Held(claim) => return Ok(ClaimOutcome::Held { claim }),
            ClaimPlan::Take {
                change,
                claim,
                renewed,
            } => (change, claim, renewed),
        };
        // Claiming is writing: an agent may claim only what it may write.
        let claimed = Path::parse(&claim.path).map_err(|e| StoreError::Invalid(e.to_string()))?;
        if let Err(not_owner) = ownership.check(agent, &claimed) {
            return Err(StoreError::Forbidden(format!(
                "{agent} may not claim {} (owned by {} under rule {})",
                claim.path,
                not_owner.owners.join(", "),
                not_owner.rule
            )));
        }
        let response = push(PushRequest {
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
        })?;
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

/// A release as one CAS revision (a `remove` tested with `from`), like [`claim_cas`].
pub fn release_cas(
    agent: &str,
    path: &str,
    now: impl Fn() -> u64,
    current: impl Fn() -> Result<Value, StoreError>,
    push: impl Fn(PushRequest) -> Result<PushResponse, StoreError>,
) -> Result<ReleaseOutcome, StoreError> {
    crate::validate_agent_name(agent)?;
    for _ in 0..CAS_ATTEMPTS {
        let doc = current()?;
        let change = match plan_release(&doc, agent, path, now()).map_err(claim_error)? {
            ReleasePlan::NotHeld => return Ok(ReleaseOutcome::NotHeld),
            ReleasePlan::HeldByOther(claim) => return Ok(ReleaseOutcome::HeldByOther { claim }),
            ReleasePlan::Remove(change) => change,
        };
        let response = push(PushRequest {
            agent: agent.to_owned(),
            level: Level::Checkpoint,
            base_revision: None,
            request_id: None,
            strategy: Strategy::Atomic,
            summary: format!("release claim on {path}"),
            changes: vec![change],
        })?;
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
