//! The HTTP side of the hardening classes: each refused with the right status and
//! nothing changed, and the server answering throughout.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ctxsync_core::OwnershipRule;
use ctxsync_server::ServerConfig;
use ctxsync_store::{Role, Store, StoreOptions};
use serde_json::json;

fn owned_server() -> Server {
    Server::with(
        StoreOptions {
            ownership: ctxsync_core::Ownership::new(vec![OwnershipRule {
                path: "decisions_log.**".into(),
                owners: vec!["planner".into()],
            }])
            .unwrap(),
            ..StoreOptions::default()
        },
        ServerConfig::default(),
    )
}

fn push_url(s: &Server) -> String {
    s.url("/v1/contexts/default/push")
}

#[test]
fn null_values_and_nan_over_http() {
    let s = Server::start();
    let t = s.token("builder");
    s.create(&t, "default", json!({"phase": "impl"}));
    let r = post_json(
        &push_url(&s),
        &t,
        &json!({"agent": "builder", "changes": [{"path": "phase", "to": null}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let doc = get(&s.url("/v1/contexts/default"), &t).json();
    assert_eq!(doc["document"]["phase"], serde_json::Value::Null, "{doc}");
    let v = post_json(&s.url("/v1/contexts/default/verify"), &t, &json!({}));
    assert_eq!(v.json()["ok"], true, "{}", v.text());
    // YAML's .nan has no JSON spelling: refused, not stored as null.
    let r = request(
        "POST",
        &push_url(&s),
        Some(&t),
        &[("Content-Type", "application/yaml")],
        Some(b"agent: builder\nchanges:\n- {path: phase, to: .nan}\n"),
    );
    r.assert_error(400, "bad_request");
    assert_eq!(s.revision("default"), 1);
}

#[test]
fn a_bom_in_a_yaml_body_is_ignored() {
    let s = Server::start();
    let t = s.token("builder");
    s.create(&t, "default", json!({}));
    let r = request(
        "POST",
        &push_url(&s),
        Some(&t),
        &[("Content-Type", "application/yaml")],
        Some("\u{feff}agent: builder\nchanges:\n- {path: a, to: 1}\n".as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn deeply_nested_bodies_are_refused_quickly_and_health_stays_up() {
    let s = Server::start();
    let t = s.token("builder");
    s.create(&t, "default", json!({}));
    let bomb = format!("agent: builder\nchanges: {}", "{a: ".repeat(200_000));
    let started = Instant::now();
    let r = request(
        "POST",
        &push_url(&s),
        Some(&t),
        &[("Content-Type", "application/yaml")],
        Some(bomb.as_bytes()),
    );
    r.assert_error(400, "bad_request");
    // Not a timing assertion on the machine's speed: a generous bound that the old
    // quadratic parse (minutes) could never meet.
    assert!(started.elapsed() < Duration::from_secs(20));
    let deep_json = format!(
        "{{\"agent\":\"builder\",\"changes\":[{{\"path\":\"a\",\"to\":{}1{}}}]}}",
        "[".repeat(120),
        "]".repeat(120)
    );
    let r = request(
        "POST",
        &push_url(&s),
        Some(&t),
        &[("Content-Type", "application/json")],
        Some(deep_json.as_bytes()),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let long_path = vec!["a"; 5000].join(".");
    let r = post_json(
        &push_url(&s),
        &t,
        &json!({"agent": "builder", "changes": [{"path": long_path, "to": 1}]}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(get(&s.url("/healthz"), "").status, 200);
    assert_eq!(s.revision("default"), 0);
    // Everything in the context still reads.
    assert_eq!(get(&s.url("/v1/contexts/default"), &t).status, 200);
}

#[test]
fn copy_amplification_is_a_413_and_the_server_lives() {
    let s = Server::start();
    let t = s.token("builder");
    s.create(&t, "default", json!({"seed": "x".repeat(4096)}));
    let changes: Vec<_> = (0..64)
        .map(|i| json!({"op": "copy", "from": "", "path": format!("/c{i}")}))
        .collect();
    let r = post_json(
        &push_url(&s),
        &t,
        &json!({"agent": "builder", "changes": changes}),
    );
    r.assert_error(413, "payload_too_large");
    assert_eq!(s.revision("default"), 0);
    assert_eq!(get(&s.url("/healthz"), "").status, 200);
}

#[test]
fn ownership_holds_for_root_writes_reverts_and_conflicts() {
    let s = owned_server();
    let planner = s.token("planner");
    let builder = s.token("builder");
    s.create(
        &planner,
        "default",
        json!({"decisions_log": {"recent": []}, "phase": "a"}),
    );
    let r = post_json(
        &push_url(&s),
        &planner,
        &json!({"agent": "planner", "changes": [{"path": "decisions_log.recent[-]", "to": {"id": "d1"}}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    for change in [
        json!({"path": "", "to": {}}),
        json!({"op": "replace", "path": "", "value": {"phase": "b"}}),
    ] {
        let r = post_json(
            &push_url(&s),
            &builder,
            &json!({"agent": "builder", "strategy": "force", "changes": [change]}),
        );
        assert_eq!(r.status, 403, "{}", r.text());
        assert_eq!(r.json()["rejected"][0]["reason"], "not_owner");
    }
    let r = post_json(
        &s.url("/v1/contexts/default/revert"),
        &builder,
        &json!({"to": 0}),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(s.revision("default"), 1);
    // A deferred conflict of the builder's cannot be settled by the planner.
    let r = post_json(
        &push_url(&s),
        &builder,
        &json!({"agent": "builder", "strategy": "defer", "changes": [{"path": "phase", "from": "zzz", "to": "c"}]}),
    );
    let id = r.json()["conflicts"][0]["id"].as_u64().unwrap();
    let r = post_json(
        &s.url(&format!("/v1/contexts/default/conflicts/{id}/resolve")),
        &planner,
        &json!({"prefer": "theirs"}),
    );
    r.assert_error(403, "forbidden");
    assert_eq!(s.store.open_conflicts("default").unwrap().len(), 1);
    // An admin token may revert.
    let admin = s.token_with_role("ops", Role::Admin);
    let r = post_json(
        &s.url("/v1/contexts/default/revert"),
        &admin,
        &json!({"to": 0}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn viewer_tokens_only_read() {
    let s = Server::start();
    let t = s.token("builder");
    s.create(&t, "default", json!({"a": 1}));
    let viewer = s.token_with_role("watcher", Role::Viewer);
    assert_eq!(get(&s.url("/v1/contexts/default"), &viewer).status, 200);
    let r = post_json(
        &push_url(&s),
        &viewer,
        &json!({"agent": "watcher", "changes": [{"path": "a", "to": 2}]}),
    );
    r.assert_error(403, "forbidden");
    let r = post_json(
        &s.url("/v1/contexts/default/revert"),
        &viewer,
        &json!({"to": 0}),
    );
    r.assert_error(403, "forbidden");
    let r = put_json(&s.url("/v1/contexts/other"), &viewer, &json!({}));
    r.assert_error(403, "forbidden");
    assert_eq!(s.revision("default"), 0);
}

#[test]
fn a_reused_request_id_with_other_changes_is_409() {
    let s = Server::start();
    let t = s.token("builder");
    s.create(&t, "default", json!({}));
    let body = |v: i64| json!({"agent": "builder", "request_id": "01JDREUSED0000000000000000", "changes": [{"path": "a", "to": v}]});
    assert_eq!(post_json(&push_url(&s), &t, &body(1)).status, 200);
    assert_eq!(
        post_json(&push_url(&s), &t, &body(1)).json()["replayed"],
        true
    );
    post_json(&push_url(&s), &t, &body(2)).assert_error(409, "request_id_reused");
    assert_eq!(s.revision("default"), 1);
}

#[test]
fn readyz_fails_when_the_wal_is_deleted_and_writes_stop() {
    let s = Server::start();
    let t = s.token("builder");
    s.create(&t, "default", json!({}));
    assert_eq!(get(&s.url("/readyz"), "").status, 200);
    std::fs::remove_file(s.dir.path().join("ctxsync.db-wal")).unwrap();
    let r = get(&s.url("/readyz"), "");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("write-ahead log"), "{}", r.text());
    let r = post_json(
        &push_url(&s),
        &t,
        &json!({"agent": "builder", "changes": [{"path": "a", "to": 1}]}),
    );
    r.assert_error(503, "unavailable");
    // Reads go on.
    assert_eq!(get(&s.url("/v1/contexts/default"), &t).status, 200);
}
