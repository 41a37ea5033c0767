//! Claims: leases an agent takes on a list element or a field so that others leave it
//! alone until the lease ends.
//!
//! A claim lives *in the document*, in the top-level object `claims`, keyed by the
//! claimed path in canonical dotted form (`project_state.active_tasks[id=task-7]`), with
//! the value `{holder, claimed_at_ms, expires_at_ms}`. Taking one is therefore an
//! ordinary revision guarded by a `from` test on the claim entry: of N agents that race
//! for it, exactly one revision can pass the test, and the others see the winner. It is
//! visible in pulls, streamed, reverted and audited like any data.
//!
//! Expiry needs no process: a claim whose `expires_at_ms` is not after the store's clock
//! is simply not live, wherever it is read ([`live_claims`]) or enforced
//! ([`ClaimGuard`]). This module is pure; the store passes its clock in.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::apply::{canonicalize, get};
use crate::change::{Change, Expect, Op};
use crate::path::{Path, PathError, Segment};

/// The top-level key of the document that holds the claims.
pub const CLAIMS_KEY: &str = "claims";

/// Longest lease one claim may ask for (a day): a forgotten claim should not block a
/// task for longer than that.
pub const MAX_TTL_MS: u64 = 24 * 3600 * 1000;

/// One claim as the document stores it under `claims.<path>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub holder: String,
    pub claimed_at_ms: u64,
    pub expires_at_ms: u64,
}

impl Claim {
    /// True while the lease runs at `now_ms`.
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.expires_at_ms > now_ms
    }

    /// The stored form (the value of the claim entry).
    pub fn to_value(&self) -> Value {
        json!({
            "holder": self.holder,
            "claimed_at_ms": self.claimed_at_ms,
            "expires_at_ms": self.expires_at_ms,
        })
    }

    /// Reads a claim entry; anything that is not a well-formed claim is no claim.
    pub fn from_value(value: &Value) -> Option<Self> {
        let holder = value.get("holder")?.as_str()?;
        if holder.is_empty() {
            return None;
        }
        Some(Self {
            holder: holder.to_owned(),
            claimed_at_ms: value.get("claimed_at_ms")?.as_u64()?,
            expires_at_ms: value.get("expires_at_ms")?.as_u64()?,
        })
    }
}

/// A claim with the path it covers, as answers list it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimView {
    /// The claimed path, canonical dotted form (also the key under `claims`).
    pub path: String,
    pub holder: String,
    pub claimed_at_ms: u64,
    pub expires_at_ms: u64,
}

impl ClaimView {
    pub fn new(path: impl Into<String>, claim: &Claim) -> Self {
        Self {
            path: path.into(),
            holder: claim.holder.clone(),
            claimed_at_ms: claim.claimed_at_ms,
            expires_at_ms: claim.expires_at_ms,
        }
    }

    pub fn claim(&self) -> Claim {
        Claim {
            holder: self.holder.clone(),
            claimed_at_ms: self.claimed_at_ms,
            expires_at_ms: self.expires_at_ms,
        }
    }
}

/// Why a path cannot be claimed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("cannot claim {0:?}: {1}")]
    Unclaimable(String, &'static str),
    #[error("a claim's ttl must be between 1 ms and {MAX_TTL_MS} ms (a day), not {0} ms")]
    Ttl(u64),
}

/// The canonical key for claiming `path` in `doc`: positions of elements that have an
/// `id` become `[id=...]`, so the claim follows the element when the list shifts.
pub fn claim_key(doc: &Value, path: &str) -> Result<(Path, String), ClaimError> {
    let parsed = Path::parse(path)?;
    if parsed.is_root() {
        return Err(ClaimError::Unclaimable(
            path.to_owned(),
            "the whole document cannot be claimed",
        ));
    }
    if parsed
        .segments()
        .iter()
        .any(|s| matches!(s, Segment::Append))
    {
        return Err(ClaimError::Unclaimable(
            path.to_owned(),
            "`[-]` names no element yet; claim the element by its id",
        ));
    }
    if matches!(parsed.segments().first(), Some(Segment::Key(k)) if k == CLAIMS_KEY) {
        return Err(ClaimError::Unclaimable(
            path.to_owned(),
            "claims themselves cannot be claimed",
        ));
    }
    let canonical = canonicalize(doc, &parsed);
    let key = canonical.to_string();
    Ok((canonical, key))
}

/// Where the claim for `key` is stored: `claims."<key>"`.
pub fn entry_path(key: &str) -> Path {
    Path::root().key(CLAIMS_KEY).key(key)
}

/// The claim stored for `key`, live or not.
pub fn stored_claim(doc: &Value, key: &str) -> Option<Claim> {
    doc.get(CLAIMS_KEY)?.get(key).and_then(Claim::from_value)
}

/// Every claim in `doc` that is live at `now_ms`, ordered by path.
pub fn live_claims(doc: &Value, now_ms: u64) -> Vec<ClaimView> {
    let Some(claims) = doc.get(CLAIMS_KEY).and_then(Value::as_object) else {
        return Vec::new();
    };
    let mut out: Vec<ClaimView> = claims
        .iter()
        .filter_map(|(key, value)| {
            let claim = Claim::from_value(value)?;
            claim.is_live(now_ms).then(|| ClaimView::new(key, &claim))
        })
        .collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// Every claim in `doc` held by `holder` that has expired at `now_ms`.
pub fn expired_claims_of(doc: &Value, holder: &str, now_ms: u64) -> Vec<ClaimView> {
    let Some(claims) = doc.get(CLAIMS_KEY).and_then(Value::as_object) else {
        return Vec::new();
    };
    claims
        .iter()
        .filter_map(|(key, value)| {
            let claim = Claim::from_value(value)?;
            (claim.holder == holder && !claim.is_live(now_ms)).then(|| ClaimView::new(key, &claim))
        })
        .collect()
}

/// What a claim request comes to against the current document.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimPlan {
    /// Write this change (a `set` of the entry, tested with `from` against what is
    /// stored now, so a racing claimant's revision makes it fail).
    Take {
        change: Change,
        claim: ClaimView,
        renewed: bool,
    },
    /// Someone else holds a live claim.
    Held(ClaimView),
}

/// Decides a claim of `path` by `agent` for `ttl_ms` at `now_ms`: taken when nobody else
/// holds a live claim on it (an expired claim, or the agent's own, is replaced; the
/// agent's own is a renewal).
pub fn plan_claim(
    doc: &Value,
    agent: &str,
    path: &str,
    ttl_ms: u64,
    now_ms: u64,
) -> Result<ClaimPlan, ClaimError> {
    if ttl_ms == 0 || ttl_ms > MAX_TTL_MS {
        return Err(ClaimError::Ttl(ttl_ms));
    }
    let (_, key) = claim_key(doc, path)?;
    let entry = entry_path(&key);
    let current = get(doc, &entry);
    let stored = current.and_then(Claim::from_value);
    if let Some(held) = &stored {
        if held.is_live(now_ms) && held.holder != agent {
            return Ok(ClaimPlan::Held(ClaimView::new(key, held)));
        }
    }
    let renewed = stored
        .as_ref()
        .is_some_and(|c| c.is_live(now_ms) && c.holder == agent);
    let claim = Claim {
        holder: agent.to_owned(),
        // A renewal keeps when the lease began.
        claimed_at_ms: match &stored {
            Some(c) if renewed => c.claimed_at_ms,
            _ => now_ms,
        },
        expires_at_ms: now_ms.saturating_add(ttl_ms),
    };
    let expect = match current {
        Some(value) => Expect::Value(value.clone()),
        None => Expect::Absent,
    };
    Ok(ClaimPlan::Take {
        change: Change::set(entry, claim.to_value()).with_expect(expect),
        claim: ClaimView::new(key, &claim),
        renewed,
    })
}

/// What a release request comes to against the current document.
#[derive(Debug, Clone, PartialEq)]
pub enum ReleasePlan {
    /// Remove the entry (tested with `from`).
    Remove(Change),
    /// There is no claim on the path (or only an expired one of someone else's).
    NotHeld,
    /// Someone else holds a live claim.
    HeldByOther(ClaimView),
}

/// Decides a release of `path` by `agent`: the holder's claim (live or expired) is
/// removed; another agent's live claim is not.
pub fn plan_release(
    doc: &Value,
    agent: &str,
    path: &str,
    now_ms: u64,
) -> Result<ReleasePlan, ClaimError> {
    let (_, key) = claim_key(doc, path)?;
    let entry = entry_path(&key);
    let Some(current) = get(doc, &entry) else {
        return Ok(ReleasePlan::NotHeld);
    };
    match Claim::from_value(current) {
        Some(c) if c.holder != agent && c.is_live(now_ms) => {
            Ok(ReleasePlan::HeldByOther(ClaimView::new(key, &c)))
        }
        Some(c) if c.holder != agent => Ok(ReleasePlan::NotHeld),
        _ => Ok(ReleasePlan::Remove(Change {
            path: entry,
            op: Op::Remove,
            expect: Some(Expect::Value(current.clone())),
        })),
    }
}

/// The live claims of a document, ready to check writes against (DESIGN §13): a write at,
/// below or above a claimed path, or to its claim entry, by anyone but the holder is
/// refused with `claimed`.
#[derive(Debug, Clone, Default)]
pub struct ClaimGuard {
    /// (claimed path, entry path, claim) for each live claim.
    live: Vec<(Path, Path, ClaimView)>,
}

impl ClaimGuard {
    /// The live claims of `doc` at `now_ms`. Entries whose key is not a path are kept
    /// as data but guard nothing (beyond their own entry).
    pub fn new(doc: &Value, now_ms: u64) -> Self {
        let Some(claims) = doc.get(CLAIMS_KEY).and_then(Value::as_object) else {
            return Self::default();
        };
        if claims.is_empty() {
            return Self::default();
        }
        let live = claims
            .iter()
            .filter_map(|(key, value)| {
                let claim = Claim::from_value(value)?;
                if !claim.is_live(now_ms) {
                    return None;
                }
                // An unparsable key guards only its own entry: a path that matches
                // nothing but the entry's own prefix.
                let claimed = Path::parse(key).unwrap_or_else(|_| entry_path(key));
                Some((claimed, entry_path(key), ClaimView::new(key, &claim)))
            })
            .collect();
        Self { live }
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// The live claim of another agent that a write by `agent` at `path` (canonical)
    /// would touch, if any.
    pub fn blocking(&self, agent: &str, path: &Path) -> Option<&ClaimView> {
        self.live
            .iter()
            .find(|(claimed, entry, view)| {
                view.holder != agent && (claimed.overlaps(path) || entry.overlaps(path))
            })
            .map(|(_, _, view)| view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        json!({"project_state": {"active_tasks": [
            {"id": "task-7", "status": "todo"},
            {"id": "task-8", "status": "todo"}
        ]}})
    }

    #[test]
    fn key_is_canonical() {
        let (_, key) = claim_key(&doc(), "project_state.active_tasks[1]").unwrap();
        assert_eq!(key, "project_state.active_tasks[id=task-8]");
        let (_, key) = claim_key(&doc(), "/project_state/active_tasks/0/status").unwrap();
        assert_eq!(key, "project_state.active_tasks[id=task-7].status");
        assert!(claim_key(&doc(), "project_state.active_tasks[-]").is_err());
        assert!(claim_key(&doc(), "claims.x").is_err());
        assert!(claim_key(&doc(), "").is_err());
    }

    #[test]
    fn entry_path_round_trips() {
        let entry = entry_path("project_state.active_tasks[id=task-7]");
        let text = entry.to_string();
        assert_eq!(Path::parse(&text).unwrap(), entry);
    }

    #[test]
    fn plan_take_then_held_then_expired() {
        let mut d = doc();
        let path = "project_state.active_tasks[id=task-7]";
        let ClaimPlan::Take {
            change,
            claim,
            renewed,
        } = plan_claim(&d, "a", path, 1000, 10).unwrap()
        else {
            panic!("expected take")
        };
        assert!(!renewed);
        assert_eq!(claim.expires_at_ms, 1010);
        crate::apply_change(&mut d, &change).unwrap();
        match plan_claim(&d, "b", path, 1000, 500).unwrap() {
            ClaimPlan::Held(held) => assert_eq!(held.holder, "a"),
            other => panic!("expected held, got {other:?}"),
        }
        match plan_claim(&d, "a", path, 1000, 500).unwrap() {
            ClaimPlan::Take { renewed, claim, .. } => {
                assert!(renewed);
                assert_eq!(claim.claimed_at_ms, 10);
                assert_eq!(claim.expires_at_ms, 1500);
            }
            other => panic!("expected renewal, got {other:?}"),
        }
        // Expired at exactly expires_at_ms.
        assert!(matches!(
            plan_claim(&d, "b", path, 1000, 1010).unwrap(),
            ClaimPlan::Take { renewed: false, .. }
        ));
        assert!(plan_claim(&d, "b", path, 0, 1).is_err());
        assert!(plan_claim(&d, "b", path, MAX_TTL_MS + 1, 1).is_err());
    }

    #[test]
    fn guard_blocks_at_below_above_and_entry() {
        let mut d = doc();
        let path = "project_state.active_tasks[id=task-7]";
        let ClaimPlan::Take { change, .. } = plan_claim(&d, "a", path, 1000, 0).unwrap() else {
            panic!()
        };
        crate::apply_change(&mut d, &change).unwrap();
        let guard = ClaimGuard::new(&d, 5);
        let p = |s: &str| Path::parse(s).unwrap();
        assert!(guard.blocking("b", &p(path)).is_some());
        assert!(guard.blocking("b", &p(&format!("{path}.status"))).is_some());
        assert!(guard.blocking("b", &p("project_state")).is_some());
        assert!(guard.blocking("b", &p("claims")).is_some());
        assert!(guard.blocking("b", &entry_path(path)).is_some());
        assert!(guard
            .blocking("b", &p("project_state.active_tasks[id=task-8]"))
            .is_none());
        assert!(guard
            .blocking("b", &p("project_state.active_tasks[-]"))
            .is_none());
        assert!(
            guard.blocking("a", &p(path)).is_none(),
            "the holder may write"
        );
        assert!(
            ClaimGuard::new(&d, 1000).is_empty(),
            "expired guards nothing"
        );
    }

    #[test]
    fn release_plans() {
        let mut d = doc();
        let path = "project_state.active_tasks[id=task-7]";
        assert_eq!(
            plan_release(&d, "a", path, 0).unwrap(),
            ReleasePlan::NotHeld
        );
        let ClaimPlan::Take { change, .. } = plan_claim(&d, "a", path, 1000, 0).unwrap() else {
            panic!()
        };
        crate::apply_change(&mut d, &change).unwrap();
        assert!(matches!(
            plan_release(&d, "b", path, 5).unwrap(),
            ReleasePlan::HeldByOther(_)
        ));
        assert_eq!(
            plan_release(&d, "b", path, 2000).unwrap(),
            ReleasePlan::NotHeld
        );
        let ReleasePlan::Remove(change) = plan_release(&d, "a", path, 2000).unwrap() else {
            panic!()
        };
        crate::apply_change(&mut d, &change).unwrap();
        assert!(stored_claim(&d, path).is_none());
    }
}
