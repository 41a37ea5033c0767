//! The event stream over real HTTP: every revision in order, resume with Last-Event-ID
//! without loss or repeats, filters, resync below the horizon, commits by other writers
//! of the same store, no compression buffering, many subscribers.

mod common;

use std::time::Duration;

use common::*;
use ctxsync_core::{Change, Level, Path, PushRequest};
use ctxsync_store::Store;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

fn push(s: &Server, token: &str, agent: &str, level: &str, path: &str, to: Value) -> u64 {
    let r = post_json(
        &s.url("/v1/contexts/ctx/push"),
        token,
        &json!({"agent": agent, "level": level, "changes": [{"path": path, "to": to}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["revision"].as_u64().unwrap()
}

fn setup() -> (Server, String, String) {
    let s = Server::start();
    let planner = s.token("planner");
    let builder = s.token("builder");
    s.create(&planner, "ctx", seed_doc());
    (s, planner, builder)
}

/// Reads `n` revision events and returns their revisions.
fn revisions(sse: &mut Sse, n: usize) -> Vec<u64> {
    (0..n)
        .map(|i| {
            let e = sse
                .next(WAIT)
                .unwrap_or_else(|| panic!("event {i} of {n} did not come"));
            assert_eq!(e.event, "revision", "{e:?}");
            let entry = e.json();
            assert_eq!(entry["revision"].as_u64(), Some(e.revision()));
            e.revision()
        })
        .collect()
}

#[test]
fn every_revision_in_order_and_resume_loses_and_repeats_nothing() {
    let (s, planner, builder) = setup();
    let mut sse = Sse::connect(&s.addr, "/v1/contexts/ctx/events?since=0", &planner, &[]);
    assert_eq!(sse.status, 200);
    assert!(sse
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    for i in 0..5 {
        let (t, a) = if i % 2 == 0 {
            (&planner, "planner")
        } else {
            (&builder, "builder")
        };
        push(
            &s,
            t,
            a,
            "checkpoint",
            "project_state.current_phase",
            json!(format!("p{i}")),
        );
    }
    let first = sse.next(WAIT).unwrap();
    let entry = first.json();
    assert_eq!(entry["agent"], "planner");
    assert_eq!(entry["edits"][0]["path"], "project_state.current_phase");
    assert_eq!(entry["edits"][0]["new"], "p0");
    assert_eq!(first.revision(), 1);
    assert_eq!(revisions(&mut sse, 4), [2, 3, 4, 5]);
    sse.close();

    // Pushed while nobody listens.
    for i in 5..8 {
        push(&s, &builder, "builder", "checkpoint", "notes", json!(i));
    }
    let mut sse = Sse::connect(
        &s.addr,
        "/v1/contexts/ctx/events?since=1",
        &planner,
        &[("Last-Event-ID", "5")],
    );
    assert_eq!(
        revisions(&mut sse, 3),
        [6, 7, 8],
        "Last-Event-ID wins over since"
    );
    push(&s, &planner, "planner", "critical", "notes", json!("after"));
    assert_eq!(revisions(&mut sse, 1), [9]);
    assert!(
        sse.next(Duration::from_millis(400)).is_none(),
        "nothing repeated"
    );
}

#[test]
fn without_since_only_new_revisions_come() {
    let (s, planner, _) = setup();
    push(&s, &planner, "planner", "checkpoint", "notes", json!(1));
    push(&s, &planner, "planner", "checkpoint", "notes", json!(2));
    let mut sse = Sse::connect(&s.addr, "/v1/contexts/ctx/events", &planner, &[]);
    assert_eq!(sse.status, 200);
    std::thread::sleep(Duration::from_millis(100));
    push(&s, &planner, "planner", "checkpoint", "notes", json!(3));
    assert_eq!(revisions(&mut sse, 1), [3]);
}

#[test]
fn levels_and_sections_filter() {
    let (s, planner, builder) = setup();
    let mut critical = Sse::connect(
        &s.addr,
        "/v1/contexts/ctx/events?since=0&levels=critical",
        &planner,
        &[],
    );
    let mut comms = Sse::connect(
        &s.addr,
        "/v1/contexts/ctx/events?since=0&sections=communication",
        &planner,
        &[],
    );
    push(
        &s,
        &builder,
        "builder",
        "checkpoint",
        "project_state.current_phase",
        json!("a"),
    );
    push(
        &s,
        &builder,
        "builder",
        "critical",
        "project_state.blocked_tasks[-]",
        json!({"id": "task-9"}),
    );
    push(
        &s,
        &planner,
        "planner",
        "periodic",
        "communication.notes[-]",
        json!("hello"),
    );
    // One revision writing both a section and something else: edits are filtered.
    let r = post_json(
        &s.url("/v1/contexts/ctx/push"),
        &planner,
        &json!({"agent": "planner", "level": "critical", "changes": [
            {"path": "communication.notes[-]", "to": "two"},
            {"path": "project_state.current_phase", "to": "b"}]}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(revisions(&mut critical, 2), [2, 4]);
    assert!(critical.next(Duration::from_millis(300)).is_none());
    let e = comms.next(WAIT).unwrap();
    assert_eq!(e.revision(), 3);
    let e = comms.next(WAIT).unwrap();
    assert_eq!(e.revision(), 4);
    let edits = e.json()["edits"].as_array().unwrap().clone();
    assert_eq!(edits.len(), 1);
    assert_eq!(edits[0]["new"], "two");
    assert!(comms.next(Duration::from_millis(300)).is_none());
    // Bad filters are 400 before the stream starts.
    let mut bad = Sse::connect(
        &s.addr,
        "/v1/contexts/ctx/events?levels=urgent",
        &planner,
        &[],
    );
    assert_eq!(bad.status, 400);
    assert!(bad.rest().contains("bad_request"));
    let bad = Sse::connect(&s.addr, "/v1/contexts/ctx/events?since=99", &planner, &[]);
    assert_eq!(bad.status, 400);
    let bad = Sse::connect(&s.addr, "/v1/contexts/nope/events", &planner, &[]);
    assert_eq!(bad.status, 404);
    let bad = Sse::connect(&s.addr, "/v1/contexts/ctx/events", "wrong-token", &[]);
    assert_eq!(bad.status, 401);
}

#[test]
fn below_the_horizon_a_subscriber_is_told_to_resync() {
    let (s, planner, _) = setup();
    for i in 0..4 {
        push(&s, &planner, "planner", "checkpoint", "notes", json!(i));
    }
    let horizon = s.compact("ctx");
    assert_eq!(horizon, 4);
    let mut sse = Sse::connect(
        &s.addr,
        "/v1/contexts/ctx/events",
        &planner,
        &[("Last-Event-ID", "1")],
    );
    assert_eq!(sse.status, 200);
    let e = sse.next(WAIT).unwrap();
    assert_eq!(e.event, "resync");
    assert_eq!(e.json(), json!({"horizon": 4, "revision": 4}));
    push(&s, &planner, "planner", "checkpoint", "notes", json!("new"));
    assert_eq!(revisions(&mut sse, 1), [5]);
}

#[test]
fn commits_by_other_writers_of_the_store_are_streamed() {
    let (s, planner, _) = setup();
    let mut sse = Sse::connect(&s.addr, "/v1/contexts/ctx/events?since=0", &planner, &[]);
    assert_eq!(sse.status, 200);
    // As the CLI would: straight into the store, the server is not told.
    for i in 0..3 {
        s.store
            .push(
                "ctx",
                PushRequest {
                    agent: "cli".into(),
                    level: Level::Checkpoint,
                    base_revision: None,
                    request_id: None,
                    strategy: Default::default(),
                    summary: String::new(),
                    changes: vec![Change::set(Path::parse("notes").unwrap(), json!(i))],
                },
            )
            .unwrap();
    }
    assert_eq!(revisions(&mut sse, 3), [1, 2, 3]);
}

#[test]
fn event_streams_are_not_compressed_and_flush_each_event() {
    let (s, planner, _) = setup();
    let mut sse = Sse::connect(
        &s.addr,
        "/v1/contexts/ctx/events",
        &planner,
        &[("Accept-Encoding", "gzip, zstd")],
    );
    assert_eq!(sse.status, 200);
    assert!(
        sse.header("content-encoding").is_none(),
        "{:?}",
        sse.headers
    );
    std::thread::sleep(Duration::from_millis(100));
    let started = std::time::Instant::now();
    push(&s, &planner, "planner", "critical", "notes", json!("now"));
    assert_eq!(revisions(&mut sse, 1), [1]);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn many_subscribers_see_the_same_complete_sequence_under_concurrent_pushes() {
    let (s, planner, builder) = setup();
    let mut subs: Vec<Sse> = (0..20)
        .map(|_| Sse::connect(&s.addr, "/v1/contexts/ctx/events?since=0", &planner, &[]))
        .collect();
    let url = s.url("/v1/contexts/ctx/push");
    std::thread::scope(|scope| {
        for (t, agent) in [(&planner, "planner"), (&builder, "builder")] {
            for k in 0..2 {
                let url = url.clone();
                scope.spawn(move || {
                    for i in 0..15 {
                        let r = post_json(
                            &url,
                            t,
                            &json!({"agent": agent, "changes": [{"path": format!("work.{agent}{k}"), "to": i}]}),
                        );
                        assert_eq!(r.status, 200, "{}", r.text());
                    }
                });
            }
        }
    });
    let total = s.revision("ctx");
    assert_eq!(total, 60);
    let expected: Vec<u64> = (1..=total).collect();
    for sub in &mut subs {
        assert_eq!(revisions(sub, total as usize), expected);
    }
    let prom = request("GET", &s.url("/metrics"), None, &[], None).text();
    assert!(prom.contains("ctxsync_sse_subscribers 20"), "{prom}");
    for sub in subs {
        sub.close();
    }
}
