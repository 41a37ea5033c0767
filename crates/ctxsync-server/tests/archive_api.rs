//! The lifecycle routes on a real server: archival on demand and by the push path, paged
//! lazy reads with filters, refusals (viewer tokens, bad paths and limits) that are 4xx
//! and change nothing; storage use with its warnings in `/v1/storage` and `/readyz`.

mod common;

use common::{get, post_json, Server};
use ctxsync_server::ServerConfig;
use ctxsync_store::{Role, StoreOptions};
use serde_json::{json, Value};

fn server(keep: usize) -> Server {
    Server::with(
        StoreOptions {
            archive: ctxsync_core::archive::seed_rules(keep),
            ..StoreOptions::default()
        },
        ServerConfig::default(),
    )
}

fn append(s: &Server, token: &str, agent: &str, i: usize) -> Value {
    let r = post_json(
        &s.url("/v1/contexts/ctx/push"),
        token,
        &json!({"agent": agent, "changes": [
            {"path": "decisions_log.recent[-]", "to": {"id": format!("d{i}"), "decision": format!("choice {i}")}}
        ]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

#[test]
fn archive_runs_and_reads_in_pages() {
    let s = server(5);
    let token = s.token("planner");
    s.create(&token, "ctx", common::seed_doc());
    for i in 0..30 {
        append(&s, &token, "planner", i);
    }
    let run = post_json(&s.url("/v1/contexts/ctx/archive/run"), &token, &json!({}));
    assert_eq!(run.status, 200, "{}", run.text());
    let again = post_json(&s.url("/v1/contexts/ctx/archive/run"), &token, &json!({}));
    assert!(again.json().get("push").is_none(), "{}", again.text());

    let pull = get(&s.url("/v1/contexts/ctx"), &token).json();
    let recent = pull["document"]["decisions_log"]["recent"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(recent.len(), 5);
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = get(
            &s.url(&format!("/v1/contexts/ctx/archive?limit=7&after={after}")),
            &token,
        );
        assert_eq!(page.status, 200, "{}", page.text());
        let page = page.json();
        for e in page["entries"].as_array().unwrap() {
            seen.push(e["id"].as_str().unwrap().to_owned());
        }
        match page["next_after"].as_u64() {
            Some(next) => after = next,
            None => break,
        }
    }
    // The seed document's own decision first, then the pushed ones.
    let expected: Vec<String> = std::iter::once("dec-2024-01-20-001".to_owned())
        .chain((0..25).map(|i| format!("d{i}")))
        .collect();
    assert_eq!(seen, expected, "oldest first, each once");
    let one = get(&s.url("/v1/contexts/ctx/archive?id=d3"), &token).json();
    assert_eq!(one["entries"][0]["entry"]["decision"], "choice 3");
    let found = get(&s.url("/v1/contexts/ctx/archive?q=CHOICE%2012"), &token).json();
    assert_eq!(found["entries"].as_array().unwrap().len(), 1, "{found}");
    let other = get(
        &s.url("/v1/contexts/ctx/archive?list=project_state.completed_tasks"),
        &token,
    )
    .json();
    assert_eq!(other["entries"], json!([]));
}

#[test]
fn archive_refusals_are_4xx_and_change_nothing() {
    let s = server(2);
    let token = s.token("planner");
    s.create(&token, "ctx", common::seed_doc());
    for i in 0..3 {
        append(&s, &token, "planner", i);
    }
    let before = s.revision("ctx");
    let viewer = s.token_with_role("watcher", Role::Viewer);
    post_json(&s.url("/v1/contexts/ctx/archive/run"), &viewer, &json!({}))
        .assert_error(403, "forbidden");
    for query in [
        "limit=0",
        "limit=1001",
        "limit=-1",
        "after=-5",
        "list=a%5B",
        "after=99999999999999999999999",
    ] {
        let r = get(&s.url(&format!("/v1/contexts/ctx/archive?{query}")), &token);
        assert_eq!(r.status, 400, "{query}: {}", r.text());
    }
    get(&s.url("/v1/contexts/nope/archive"), &token).assert_error(404, "not_found");
    post_json(&s.url("/v1/contexts/nope/archive/run"), &token, &json!({}))
        .assert_error(404, "not_found");
    assert_eq!(s.revision("ctx"), before);
    // A viewer may read the archive.
    assert_eq!(get(&s.url("/v1/contexts/ctx/archive"), &viewer).status, 200);
}

#[test]
fn storage_use_and_its_warnings() {
    let s = Server::with(
        StoreOptions {
            archive: ctxsync_core::archive::seed_rules(2),
            ..StoreOptions::default()
        },
        ServerConfig {
            storage_warnings: ctxsync_store::StorageThresholds {
                database_bytes: None,
                context_bytes: Some(100),
                log_bytes: None,
            },
            ..ServerConfig::default()
        },
    );
    let token = s.token("planner");
    s.create(&token, "ctx", common::seed_doc());
    for i in 0..6 {
        append(&s, &token, "planner", i);
    }
    let usage = get(&s.url("/v1/storage"), &token);
    assert_eq!(usage.status, 200, "{}", usage.text());
    let usage = usage.json();
    assert!(usage["database_bytes"].as_u64().unwrap() > 0, "{usage}");
    let ctx = &usage["contexts"][0];
    assert_eq!(ctx["context"], "ctx");
    assert!(ctx["log_revisions"].as_u64().unwrap() >= 6, "{usage}");
    assert!(ctx["log_bytes"].as_u64().unwrap() > 0);
    assert!(ctx["archive_entries"].as_u64().unwrap() >= 3, "{usage}");
    let warnings = usage["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{usage}");
    assert!(warnings[0].as_str().unwrap().contains("warn_context_bytes"));
    // Readiness carries the warning but stays ready: writes still work.
    let ready = common::request("GET", &s.url("/readyz"), None, &[], None);
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(ready.json()["storage"]["status"], "warning");
}
