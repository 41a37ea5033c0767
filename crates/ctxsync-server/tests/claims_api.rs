//! The claims, presence and critical-notice routes on a real server: 200 granted / 409
//! held with the holder, one winner among concurrent HTTP claimants, release, who, the
//! stale view in push and pull answers (also the cached full pull), critical notices
//! with mark_seen, and refusals (viewer tokens, another agent, bad input).

mod common;

use std::sync::{Arc, Barrier};

use common::{get, post_json, request, Server};
use serde_json::{json, Value};

const TASK: &str = "project_state.active_tasks[id=task-123]";

fn claims_url(s: &Server) -> String {
    s.url("/v1/contexts/ctx/claims")
}

fn push(s: &Server, token: &str, agent: &str, level: &str, changes: Value) -> Value {
    let r = post_json(
        &s.url("/v1/contexts/ctx/push"),
        token,
        &json!({"agent": agent, "level": level, "changes": changes}),
    );
    assert!(r.status == 200 || r.status == 403, "{}", r.text());
    r.json()
}

#[test]
fn one_winner_among_concurrent_claimants_and_the_rest_see_it() {
    let s = Arc::new(Server::start());
    let admin = s.token("planner");
    s.create(&admin, "ctx", common::seed_doc());
    let tokens: Vec<String> = (0..8).map(|i| s.token(&format!("agent-{i}"))).collect();
    for round in 0..5 {
        let path = format!("project_state.round{round}");
        let barrier = Arc::new(Barrier::new(tokens.len()));
        let answers: Vec<(u16, Value)> = tokens
            .iter()
            .map(|t| {
                let (s, t, barrier, path) = (
                    Arc::clone(&s),
                    t.clone(),
                    Arc::clone(&barrier),
                    path.clone(),
                );
                std::thread::spawn(move || {
                    barrier.wait();
                    let r = post_json(
                        &claims_url(&s),
                        &t,
                        &json!({"path": path, "ttl_ms": 60_000}),
                    );
                    (r.status, r.json())
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        let winners: Vec<&(u16, Value)> = answers.iter().filter(|a| a.0 == 200).collect();
        assert_eq!(winners.len(), 1, "round {round}: {answers:?}");
        let holder = winners[0].1["claim"]["holder"].clone();
        for (status, body) in &answers {
            assert!(*status == 200 || *status == 409, "{body}");
            assert_eq!(body["claim"]["holder"], holder);
            if *status == 409 {
                assert_eq!(body["outcome"], "held");
            }
        }
    }
}

#[test]
fn claim_release_enforcement_and_refusals() {
    let s = Server::start();
    let planner = s.token("planner");
    let builder = s.token("builder");
    let reviewer = s.token("reviewer");
    let viewer = s.token_with_role("dash", ctxsync_store::Role::Viewer);
    s.create(&planner, "ctx", common::seed_doc());
    let r = post_json(
        &claims_url(&s),
        &builder,
        &json!({"path": TASK, "ttl_ms": 600_000}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let granted = r.json();
    assert_eq!(granted["outcome"], "granted");
    assert_eq!(granted["claim"]["holder"], "builder");
    assert_eq!(granted["revision"], 1);
    let r = post_json(
        &claims_url(&s),
        &reviewer,
        &json!({"path": "project_state.active_tasks[0]", "ttl_ms": 1000}),
    );
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["claim"]["holder"], "builder");
    // Others' writes are refused with `claimed`.
    let answer = push(
        &s,
        &reviewer,
        "reviewer",
        "checkpoint",
        json!([{"path": format!("{TASK}.status"), "to": "done"}]),
    );
    assert_eq!(answer["rejected"][0]["reason"], "claimed", "{answer}");
    // Refusals change nothing.
    let before = s.revision("ctx");
    let r = post_json(
        &claims_url(&s),
        &viewer,
        &json!({"path": TASK, "ttl_ms": 1000}),
    );
    assert_eq!(r.status, 403);
    let r = post_json(
        &claims_url(&s),
        &reviewer,
        &json!({"path": TASK, "ttl_ms": 1000, "agent": "builder"}),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    for bad in [
        json!({"path": TASK}),
        json!({"path": TASK, "ttl_ms": 0}),
        json!({"path": "a..b", "ttl_ms": 10}),
        json!({"path": TASK, "ttl_ms": "soon"}),
        json!({"path": TASK, "ttl_ms": 10, "extra": 1}),
    ] {
        let r = post_json(&claims_url(&s), &reviewer, &bad);
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
    let r = post_json(
        &s.url("/v1/contexts/nope/claims"),
        &reviewer,
        &json!({"path": TASK, "ttl_ms": 10}),
    );
    assert_eq!(r.status, 404);
    assert_eq!(s.revision("ctx"), before);
    // Release: by another is 409, by the holder 200, twice is not_held.
    let release = |token: &str| {
        request(
            "DELETE",
            &format!("{}?path={}", claims_url(&s), urlencode(TASK)),
            Some(token),
            &[],
            None,
        )
    };
    assert_eq!(release(&reviewer).status, 409);
    let r = release(&builder);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["outcome"], "released");
    let r = release(&builder);
    assert_eq!(r.json()["outcome"], "not_held");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn stale_view_in_push_and_pull_answers() {
    let s = Server::start();
    let a = s.token("a");
    let b = s.token("b");
    s.create(&a, "ctx", common::seed_doc());
    // b's first look.
    let first = get(&s.url("/v1/contexts/ctx"), &b).json();
    let seen = first["revision"].as_u64().unwrap();
    push(
        &s,
        &a,
        "a",
        "checkpoint",
        json!([{"path": "project_state.current_phase", "to": "x"}]),
    );
    push(
        &s,
        &a,
        "a",
        "checkpoint",
        json!([{"path": "decisions_log.recent[-]", "to": {"id": "d9"}}]),
    );
    push(
        &s,
        &a,
        "a",
        "checkpoint",
        json!([{"path": "project_state.current_phase", "to": "y"}]),
    );
    // The plain full pull is served from a shared cache: the notice is spliced in.
    let pulled = get(&s.url("/v1/contexts/ctx"), &b).json();
    assert_eq!(pulled["behind"], 3, "{pulled}");
    assert_eq!(pulled["since_revision"], seen);
    assert_eq!(
        pulled["changed_sections"],
        json!(["decisions_log.recent", "project_state.current_phase"])
    );
    assert!(pulled["document"].is_object());
    // Then a push answer: nothing new.
    let answer = push(
        &s,
        &b,
        "b",
        "checkpoint",
        json!([{"path": "communication.b", "to": 1}]),
    );
    assert_eq!(answer["behind"], 0, "{answer}");
    push(
        &s,
        &a,
        "a",
        "checkpoint",
        json!([{"path": "technical_context.x", "to": 1}]),
    );
    let delta = get(&s.url(&format!("/v1/contexts/ctx?since={seen}")), &b).json();
    assert_eq!(delta["behind"], 1, "{delta}");
    assert_eq!(delta["changed_sections"], json!(["technical_context.x"]));
}

#[test]
fn agents_and_critical_notices() {
    let s = Server::start();
    let planner = s.token("planner");
    let builder = s.token("builder");
    s.create(&planner, "ctx", common::seed_doc());
    get(&s.url("/v1/contexts/ctx"), &builder);
    let r = post_json(
        &claims_url(&s),
        &builder,
        &json!({"path": TASK, "ttl_ms": 600_000}),
    );
    assert_eq!(r.status, 200);
    let critical = push(
        &s,
        &planner,
        "planner",
        "critical",
        json!([{"path": "project_state.blocked_tasks", "to": ["task-123"]}]),
    )["revision"]
        .as_u64()
        .unwrap();
    let who = get(&s.url("/v1/contexts/ctx/agents"), &planner).json();
    let agents = who["agents"].as_array().unwrap();
    let builder_row = agents.iter().find(|a| a["agent"] == "builder").unwrap();
    assert_eq!(builder_row["claims"][0]["path"], TASK);
    assert_eq!(builder_row["unseen_critical"], json!([critical]));
    assert_eq!(builder_row["lag"], 1);
    let url = s.url("/v1/contexts/ctx/agents/builder/critical");
    let notices = get(&url, &builder).json();
    assert_eq!(notices["notices"][0]["revision"], critical);
    assert_eq!(notices["notices"][0]["agent"], "planner");
    // Only the agent itself may mark its notices seen.
    let r = get(&format!("{url}?mark_seen=true"), &planner);
    assert_eq!(r.status, 403);
    let shown = get(&format!("{url}?mark_seen=true"), &builder).json();
    assert_eq!(shown["notices"].as_array().unwrap().len(), 1);
    let after = get(&url, &builder).json();
    assert_eq!(after["notices"], json!([]));
    // The /seen route answers the stale view.
    let r = post_json(
        &s.url("/v1/contexts/ctx/seen"),
        &builder,
        &json!({"revision": critical}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["behind"], 1);
}
