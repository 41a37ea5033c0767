//! Property tests of claim enforcement in `evaluate_at`: over random task lists, live and
//! expired claims by random agents and random pushes (positions, ids, parents, the claims
//! themselves, moves), no change by anyone but the holder lands at, below or above a live
//! claim unless forced; every `claimed` rejection names a live claim of another agent that
//! the change really touches; expired claims guard nothing; and a refused change leaves
//! the document as it was.

use ctxsync_core::claims::{entry_path, live_claims, plan_claim, ClaimPlan};
use ctxsync_core::level::Level;
use ctxsync_core::limits::Budget;
use ctxsync_core::ownership::Ownership;
use ctxsync_core::push::{evaluate_at, PushRequest, Strategy as PushStrategy};
use ctxsync_core::{apply_change, canonicalize, Change, Path};
use proptest::prelude::*;
use serde_json::{json, Value};

const AGENTS: [&str; 3] = ["a", "b", "c"];
const NOW: u64 = 1_000_000;

fn doc(tasks: usize) -> Value {
    let items: Vec<Value> = (0..tasks)
        .map(|i| json!({"id": format!("t{i}"), "status": "todo", "n": i}))
        .collect();
    json!({"project_state": {"active_tasks": items, "phase": "x"}, "notes": {}})
}

/// Paths a push may write, given the number of tasks.
fn target(tasks: usize) -> impl Strategy<Value = String> {
    let t = tasks.max(1);
    prop_oneof![
        (0..t).prop_map(|i| format!("project_state.active_tasks[id=t{i}].status")),
        (0..t).prop_map(|i| format!("project_state.active_tasks[{i}].n")),
        (0..t).prop_map(|i| format!("project_state.active_tasks[id=t{i}]")),
        Just("project_state.active_tasks[-]".to_owned()),
        Just("project_state.active_tasks".to_owned()),
        Just("project_state".to_owned()),
        Just("project_state.phase".to_owned()),
        Just("notes.x".to_owned()),
        Just("claims".to_owned()),
        (0..t).prop_map(|i| {
            entry_path(&format!("project_state.active_tasks[id=t{i}]")).to_string()
        }),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    tasks: usize,
    /// (agent, task, ttl that may already be over at NOW)
    claims: Vec<(usize, usize, bool)>,
    agent: usize,
    force: bool,
    writes: Vec<(String, bool)>,
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..5).prop_flat_map(|tasks| {
        (
            Just(tasks),
            prop::collection::vec((0..3usize, 0..tasks, any::<bool>()), 0..4),
            0..3usize,
            prop::bool::weighted(0.2),
            prop::collection::vec((target(tasks), any::<bool>()), 1..4),
        )
            .prop_map(|(tasks, claims, agent, force, writes)| Case {
                tasks,
                claims,
                agent,
                force,
                writes,
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn only_holders_write_under_live_claims(c in case()) {
        let mut d = doc(c.tasks);
        // Take the claims (first come, first served, as the store would).
        for (agent, task, expired) in &c.claims {
            let path = format!("project_state.active_tasks[id=t{task}]");
            let (at, ttl) = if *expired { (NOW - 500, 100) } else { (NOW - 10, 10_000) };
            if let ClaimPlan::Take { change, .. } =
                plan_claim(&d, AGENTS[*agent], &path, ttl, at).unwrap()
            {
                apply_change(&mut d, &change).unwrap();
            }
        }
        // What is live at NOW, read back from the document the way anyone would.
        let live: Vec<(Path, String)> = live_claims(&d, NOW)
            .into_iter()
            .map(|c| (Path::parse(&c.path).unwrap(), c.holder))
            .collect();
        let agent = AGENTS[c.agent];
        let changes: Vec<Change> = c
            .writes
            .iter()
            .map(|(path, remove)| {
                let v = if *remove || path.ends_with("[-]") {
                    json!({"path": path, "to": {"id": "new", "n": 1}})
                } else {
                    json!({"path": path, "to": "w"})
                };
                Change::from_json(0, &v).unwrap()
            })
            .collect();
        let request = PushRequest {
            agent: agent.into(),
            level: Level::Checkpoint,
            base_revision: None,
            request_id: None,
            strategy: if c.force { PushStrategy::Force } else { PushStrategy::Merge },
            summary: String::new(),
            changes: changes.clone(),
        };
        let before = d.clone();
        let mut after = d.clone();
        let out = match evaluate_at(
            &mut after, &request, 0, &[], &Ownership::default(), Budget::unlimited(), Some(NOW),
        ) {
            Ok(out) => out,
            // A change that is wrong in itself (e.g. a list set where it cannot go).
            Err(_) => {
                prop_assert_eq!(&after, &before);
                return Ok(());
            }
        };
        let blocked_by_other = |path: &Path| {
            live.iter().any(|(claimed, holder)| {
                holder != agent
                    && (claimed.overlaps(path)
                        || entry_path(&claimed.to_string()).overlaps(path))
            })
        };
        for applied in &out.applied {
            let change = &changes[applied.index];
            let written = canonicalize(&before, &change.path);
            if !c.force {
                prop_assert!(
                    !blocked_by_other(&written),
                    "{} landed at {} under a live claim of another: {:?}", agent, written, live
                );
            }
        }
        for rejected in &out.rejected {
            prop_assert!(!c.force, "force is never refused for a claim");
            prop_assert_eq!(&rejected.reason, "claimed");
            let change = &changes[rejected.index];
            let written = canonicalize(&before, &change.path);
            prop_assert!(blocked_by_other(&written), "{} refused without a live claim", written);
            prop_assert!(rejected.owners.iter().all(|o| o != agent));
        }
        if out.applied.is_empty() {
            prop_assert_eq!(&after, &before, "nothing applied, nothing changed");
        }
        // Without any claim enforcement (no clock), nothing is ever `claimed`.
        let mut free = before.clone();
        let unguarded = evaluate_at(
            &mut free, &request, 0, &[], &Ownership::default(), Budget::unlimited(), None,
        );
        if let Ok(unguarded) = unguarded {
            prop_assert!(unguarded.rejected.is_empty());
        }
    }
}

#[test]
fn an_expired_claim_guards_nothing_and_a_live_one_does() {
    let mut d = doc(2);
    let ClaimPlan::Take { change, .. } =
        plan_claim(&d, "a", "project_state.active_tasks[id=t0]", 100, 0).unwrap()
    else {
        panic!("take")
    };
    apply_change(&mut d, &change).unwrap();
    let request = PushRequest {
        agent: "b".into(),
        level: Level::Checkpoint,
        base_revision: None,
        request_id: None,
        strategy: PushStrategy::Atomic,
        summary: String::new(),
        changes: vec![Change::from_json(
            0,
            &json!({"path": "project_state.active_tasks[id=t0].status", "to": "done"}),
        )
        .unwrap()],
    };
    let eval = |now| {
        let mut copy = d.clone();
        evaluate_at(
            &mut copy,
            &request,
            0,
            &[],
            &Ownership::default(),
            Budget::unlimited(),
            Some(now),
        )
        .unwrap()
    };
    assert_eq!(eval(50).rejected.len(), 1);
    assert_eq!(eval(100).applied.len(), 1, "expired at expires_at_ms");
}
