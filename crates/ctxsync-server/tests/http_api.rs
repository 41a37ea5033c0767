//! The REST API over real HTTP against a real SQLite store: push semantics (compared with
//! the embedded store), errors and their shapes, pulls (sections, deltas, budgets,
//! ETags, YAML, compression), admin routes and the OpenAPI document.

mod common;

use std::collections::BTreeSet;
use std::io::Read;
use std::time::Duration;

use common::*;
use ctxsync_core::apply::{apply_edit, Edit};
use ctxsync_core::{checksum, Ownership, OwnershipRule, PushRequest};
use ctxsync_server::ServerConfig;
use ctxsync_store::{SqliteStore, Store, StoreOptions};
use serde_json::{json, Value};

fn push(s: &Server, token: &str, ctx: &str, body: Value) -> Resp {
    post_json(&s.url(&format!("/v1/contexts/{ctx}/push")), token, &body)
}

/// The same pushes against a fresh embedded store, for comparison.
fn embedded(doc: &Value, pushes: &[Value]) -> (Vec<Value>, Value) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("e.db"), StoreOptions::default()).unwrap();
    store.create_context("ctx", doc.clone()).unwrap();
    let answers = pushes
        .iter()
        .map(|p| {
            let request: PushRequest = serde_json::from_value(p.clone()).unwrap();
            serde_json::to_value(store.push("ctx", request).unwrap()).unwrap()
        })
        .collect();
    let doc = store.read("ctx", None).unwrap().document;
    (answers, doc)
}

/// Strips what legitimately differs between two stores (nothing should, but ids of
/// stored conflicts are per-store).
fn comparable(mut v: Value) -> Value {
    // The stale view is about the agent asking, not the push: only HTTP answers carry it.
    if let Some(o) = v.as_object_mut() {
        for key in ["behind", "changed_sections", "since_revision"] {
            o.remove(key);
        }
    }
    if let Some(conflicts) = v.get_mut("conflicts").and_then(Value::as_array_mut) {
        for c in conflicts {
            if let Some(o) = c.as_object_mut() {
                o.remove("id");
            }
        }
    }
    v
}

#[test]
fn seed_example_two_agents_merge_like_the_embedded_store() {
    let s = Server::start();
    let planner = s.token("planner");
    let builder = s.token("builder");
    s.create(&planner, "ctx", seed_doc());
    let pushes = [
        json!({"agent": "planner", "level": "checkpoint", "base_revision": 0, "strategy": "merge",
               "summary": "plan two tasks", "changes": [
            {"path": "project_state.active_tasks[-]", "to": {"id": "task-125", "status": "todo", "owner": "builder"}},
            {"path": "project_state.active_tasks[-]", "to": {"id": "task-126", "status": "todo", "owner": "builder"}}
        ]}),
        json!({"agent": "builder", "level": "checkpoint", "base_revision": 0, "strategy": "merge",
               "summary": "task-123 done", "changes": [
            {"path": "project_state.active_tasks[0].status", "from": "in_progress", "to": "completed"},
            {"path": "technical_context.code_changes.summary.files_added", "from": 5, "to": 7}
        ]}),
    ];
    let r1 = push(&s, &planner, "ctx", pushes[0].clone());
    assert_eq!(r1.status, 200, "{}", r1.text());
    let r2 = push(&s, &builder, "ctx", pushes[1].clone());
    assert_eq!(r2.status, 200, "{}", r2.text());
    let b = r2.json();
    assert_eq!(b["applied"].as_array().unwrap().len(), 2, "{b}");
    assert!(b["conflicts"].as_array().unwrap().is_empty());
    assert_eq!(b["revision"], 2);

    let (answers, doc) = embedded(&seed_doc(), &pushes);
    assert_eq!(comparable(r1.json()), comparable(answers[0].clone()));
    assert_eq!(comparable(b), comparable(answers[1].clone()));
    let pulled = get(&s.url("/v1/contexts/ctx"), &planner).json();
    assert_eq!(pulled["document"], doc);
    assert_eq!(pulled["checksum"], checksum(&doc));
    let tasks = pulled["document"]["project_state"]["active_tasks"]
        .as_array()
        .unwrap();
    assert_eq!(tasks.len(), 3);
    assert_eq!(tasks[0]["status"], "completed");
}

#[test]
fn real_conflict_atomic_then_defer_then_resolve() {
    let s = Server::start();
    let planner = s.token("planner");
    let builder = s.token("builder");
    s.create(&planner, "ctx", seed_doc());
    let first = json!({"agent": "planner", "base_revision": 0, "changes": [
        {"path": "project_state.active_tasks[id=task-123].status", "to": "blocked"}]});
    assert_eq!(push(&s, &planner, "ctx", first.clone()).status, 200);
    let atomic = json!({"agent": "builder", "base_revision": 0, "strategy": "atomic", "changes": [
        {"path": "project_state.completed_tasks[-]", "to": {"id": "task-123", "result": "success"}},
        {"path": "project_state.active_tasks[id=task-123].status", "to": "completed"}]});
    let r = push(&s, &builder, "ctx", atomic.clone());
    assert_eq!(r.status, 409, "{}", r.text());
    let body = r.json();
    assert!(body["applied"].as_array().unwrap().is_empty());
    let c = &body["conflicts"][0];
    assert_eq!(c["reason"], "concurrent_write");
    assert_eq!(c["yours"], "completed");
    assert_eq!(c["current"], "blocked");
    assert_eq!(c["modified_by"], "planner");
    assert_eq!(c["modified_at_revision"], 1);
    assert_eq!(s.revision("ctx"), 1, "atomic applied nothing");
    let (answers, _) = embedded(&seed_doc(), &[first, atomic]);
    assert_eq!(comparable(body), comparable(answers[1].clone()));

    // defer: the append applies, the conflicting change is stored.
    let defer = json!({"agent": "builder", "base_revision": 0, "strategy": "defer", "changes": [
        {"path": "project_state.completed_tasks[-]", "to": {"id": "task-123", "result": "success"}},
        {"path": "project_state.active_tasks[id=task-123].status", "to": "completed"}]});
    let r = push(&s, &builder, "ctx", defer);
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    let id = body["conflicts"][0]["id"]
        .as_u64()
        .expect("stored conflict id");
    assert_eq!(s.revision("ctx"), 2);
    let list = get(&s.url("/v1/contexts/ctx/conflicts"), &builder).json();
    assert_eq!(list["conflicts"][0]["id"], id);
    assert_eq!(list["conflicts"][0]["conflict"]["yours"], "completed");
    assert_eq!(list["conflicts"][0]["conflict"]["current"], "blocked");

    // Resolve in favour of mine, as the builder.
    let r = post_json(
        &s.url(&format!("/v1/contexts/ctx/conflicts/{id}/resolve")),
        &builder,
        &json!({"prefer": "mine"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["id"], id);
    assert_eq!(body["push"]["revision"], 3);
    let doc = get(&s.url("/v1/contexts/ctx"), &builder).json();
    assert_eq!(
        doc["document"]["project_state"]["active_tasks"][0]["status"],
        "completed"
    );
    let list = get(&s.url("/v1/contexts/ctx/conflicts"), &builder).json();
    assert!(list["conflicts"].as_array().unwrap().is_empty());
    // Resolving again: 404, nothing changes.
    let r = post_json(
        &s.url(&format!("/v1/contexts/ctx/conflicts/{id}/resolve")),
        &builder,
        &json!({"prefer": "theirs"}),
    );
    r.assert_error(404, "not_found");
    assert_eq!(s.revision("ctx"), 3);
}

#[test]
fn replayed_request_id_changes_nothing() {
    let s = Server::start();
    let t = s.token("builder");
    s.create(&t, "ctx", seed_doc());
    let body = json!({"agent": "builder", "request_id": "01JD0000000000000000000001",
        "changes": [{"path": "project_state.current_phase", "to": "review"}]});
    let a = push(&s, &t, "ctx", body.clone()).json();
    let b = push(&s, &t, "ctx", body).json();
    assert_eq!(a["replayed"], false);
    assert_eq!(b["replayed"], true);
    assert_eq!(a["revision"], b["revision"]);
    assert_eq!(s.revision("ctx"), 1);
}

#[test]
fn unauthenticated_requests_are_401_and_change_nothing() {
    let s = Server::start();
    let t = s.token("builder");
    s.create(&t, "ctx", seed_doc());
    let body = json!({"agent": "builder", "changes": [{"path": "a", "to": 1}]});
    let url = s.url("/v1/contexts/ctx/push");
    // No token.
    let r = request(
        "POST",
        &url,
        None,
        &[("Content-Type", "application/json")],
        Some(body.to_string().as_bytes()),
    );
    r.assert_error(401, "unauthorized");
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    // Wrong scheme, bad token.
    let r = request(
        "GET",
        &s.url("/v1/contexts"),
        None,
        &[("Authorization", "Basic Zm9vOmJhcg==")],
        None,
    );
    r.assert_error(401, "unauthorized");
    push(&s, "not-a-real-token-at-all", "ctx", body.clone()).assert_error(401, "unauthorized");
    // Revoked (as another process would: straight in the store) takes effect at once.
    assert_eq!(push(&s, &t, "ctx", body.clone()).status, 200);
    let id = s
        .store
        .list_tokens()
        .unwrap()
        .into_iter()
        .find(|i| i.agent == "builder")
        .unwrap()
        .id;
    s.store.revoke_token(&id).unwrap();
    let r = push(&s, &t, "ctx", body);
    r.assert_error(401, "unauthorized");
    get(&s.url("/v1/contexts/ctx"), &t).assert_error(401, "unauthorized");
    assert_eq!(s.revision("ctx"), 1);
    // Health endpoints need no token.
    assert_eq!(
        request("GET", &s.url("/healthz"), None, &[], None).status,
        200
    );
    assert_eq!(
        request("GET", &s.url("/readyz"), None, &[], None).status,
        200
    );
}

#[test]
fn forbidden_pushes_are_403_and_change_nothing() {
    let options = StoreOptions {
        ownership: Ownership::new(vec![OwnershipRule {
            path: "decisions_log.**".into(),
            owners: vec!["planner".into()],
        }])
        .unwrap(),
        ..StoreOptions::default()
    };
    let s = Server::with(options, ServerConfig::default());
    let builder = s.token("builder");
    s.create(&builder, "ctx", seed_doc());
    // Pushing as someone else.
    let r = push(
        &s,
        &builder,
        "ctx",
        json!({"agent": "planner", "changes": [{"path": "project_state.current_phase", "to": "x"}]}),
    );
    r.assert_error(403, "forbidden");
    // Every change not_owner: 403 with the push answer.
    let r = push(
        &s,
        &builder,
        "ctx",
        json!({"agent": "builder", "changes": [
            {"path": "decisions_log.archived_count", "to": 46},
            {"path": "decisions_log.recent[-]", "to": {"id": "dec-x"}}]}),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    let body = r.json();
    assert_eq!(body["rejected"].as_array().unwrap().len(), 2);
    assert_eq!(body["rejected"][0]["reason"], "not_owner");
    assert_eq!(body["rejected"][0]["owners"], json!(["planner"]));
    // Syncs as someone else.
    let r = post_json(
        &s.url("/v1/contexts/ctx/syncs"),
        &builder,
        &json!({"agent": "planner", "level": "periodic", "timestamp_ms": 1, "duration_us": 0, "outcome": "deferred"}),
    );
    r.assert_error(403, "forbidden");
    assert_eq!(s.revision("ctx"), 0);
}

#[test]
fn oversized_bodies_and_documents_are_413_and_change_nothing() {
    let options = StoreOptions {
        max_document_bytes: 4_000,
        ..StoreOptions::default()
    };
    let config = ServerConfig {
        max_body_bytes: 16 * 1024,
        ..ServerConfig::default()
    };
    let s = Server::with(options, config);
    let t = s.token("builder");
    s.create(&t, "ctx", seed_doc());
    let big = "x".repeat(64 * 1024);
    let r = push(
        &s,
        &t,
        "ctx",
        json!({"agent": "builder", "changes": [{"path": "notes", "to": big}]}),
    );
    r.assert_error(413, "payload_too_large");
    // Under the body limit, over the document quota.
    let r = push(
        &s,
        &t,
        "ctx",
        json!({"agent": "builder", "changes": [{"path": "notes", "to": "y".repeat(8 * 1024)}]}),
    );
    r.assert_error(413, "payload_too_large");
    assert_eq!(s.revision("ctx"), 0);
    // A small push still works afterwards.
    let r = push(
        &s,
        &t,
        "ctx",
        json!({"agent": "builder", "changes": [{"path": "notes", "to": "ok"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn bad_input_is_4xx_in_the_error_shape_and_changes_nothing() {
    let s = Server::start();
    let t = s.token("builder");
    s.create(&t, "ctx", seed_doc());
    let url = s.url("/v1/contexts/ctx/push");
    let send = |ct: &str, body: &str| {
        request(
            "POST",
            &url,
            Some(&t),
            &[("Content-Type", ct)],
            Some(body.as_bytes()),
        )
    };
    send(
        "application/json",
        "{\"agent\": \"builder\", \"changes\": [",
    )
    .assert_error(400, "bad_request");
    send(
        "application/yaml",
        "agent: builder\nchanges: [ {path: a, to: 1\n",
    )
    .assert_error(400, "bad_request");
    let r = send(
        "application/json",
        r#"{"agent": "builder", "changes": [{"path": "a..b", "to": 1}]}"#,
    );
    let body = r.assert_error(400, "bad_request");
    assert!(
        body["message"].as_str().unwrap().contains("bad path"),
        "{body}"
    );
    let r = send(
        "application/json",
        r#"{"agent": "builder", "changes": [{"op": "frobnicate", "path": "/a"}]}"#,
    );
    let body = r.assert_error(400, "bad_request");
    assert!(
        body["message"].as_str().unwrap().contains("unknown op"),
        "{body}"
    );
    send(
        "application/json",
        r#"{"agent": "builder", "changes": [], "bogus": 1}"#,
    )
    .assert_error(400, "bad_request");
    send("application/json", "").assert_error(400, "bad_request");
    // A path through a scalar: the store says why.
    send(
        "application/json",
        r#"{"agent": "builder", "changes": [{"path": "version.x", "to": 1}]}"#,
    )
    .assert_error(400, "bad_request");
    // Bad query values, unknown context, route and method.
    get(&s.url("/v1/contexts/ctx?since=abc"), &t).assert_error(400, "bad_request");
    get(&s.url("/v1/contexts/ctx?sections=a[0]"), &t).assert_error(400, "bad_request");
    get(&s.url("/v1/contexts/ctx?since=99"), &t).assert_error(400, "bad_request");
    get(&s.url("/v1/contexts/ctx/history?level=urgent"), &t).assert_error(400, "bad_request");
    get(&s.url("/v1/contexts/nope"), &t).assert_error(404, "not_found");
    push(
        &s,
        &t,
        "nope",
        json!({"agent": "builder", "changes": [{"path": "a", "to": 1}]}),
    )
    .assert_error(404, "not_found");
    get(&s.url("/v1/nothing-here"), &t).assert_error(404, "not_found");
    request("DELETE", &s.url("/v1/contexts/ctx"), Some(&t), &[], None)
        .assert_error(405, "method_not_allowed");
    put_json(&s.url("/v1/contexts/Bad%20Name"), &t, &json!({})).assert_error(400, "bad_request");
    put_json(&s.url("/v1/contexts/ctx"), &t, &json!({})).assert_error(409, "exists");
    put_json(
        &s.url("/v1/contexts/other"),
        &t,
        &json!({"template": "nope"}),
    )
    .assert_error(400, "bad_request");
    post_json(&s.url("/v1/contexts/ctx/revert"), &t, &json!({"to": 42}))
        .assert_error(400, "bad_request");
    assert_eq!(s.revision("ctx"), 0);
}

#[test]
fn since_below_the_horizon_is_410_full_required() {
    let s = Server::start();
    let t = s.token("builder");
    s.create(&t, "ctx", seed_doc());
    for i in 0..5 {
        let r = push(
            &s,
            &t,
            "ctx",
            json!({"agent": "builder", "changes": [{"path": "project_state.current_phase", "to": format!("p{i}")}]}),
        );
        assert_eq!(r.status, 200);
    }
    let horizon = s.compact("ctx");
    assert_eq!(horizon, 5);
    let body = get(&s.url("/v1/contexts/ctx?since=2"), &t).assert_error(410, "gone");
    assert_eq!(body["full_required"], true);
    get(&s.url("/v1/contexts/ctx/log?since=2"), &t).assert_error(410, "gone");
    get(&s.url("/v1/contexts/ctx?at=1"), &t).assert_error(410, "gone");
    // At the horizon a delta still works, and pushes go on.
    let d = get(&s.url("/v1/contexts/ctx?since=5"), &t).json();
    assert_eq!(d["edits"], json!([]));
    assert_eq!(
        push(
            &s,
            &t,
            "ctx",
            json!({"agent": "builder", "changes": [{"path": "project_state.current_phase", "to": "p9"}]})
        )
        .status,
        200
    );
    assert_eq!(s.revision("ctx"), 6);
    let v = post_json(&s.url("/v1/contexts/ctx/verify"), &t, &json!({})).json();
    assert_eq!(v["ok"], true, "{v}");
}

#[test]
fn etag_and_304() {
    let s = Server::start();
    let t = s.token("builder");
    s.create(&t, "ctx", seed_doc());
    let r = get(&s.url("/v1/contexts/ctx"), &t);
    assert_eq!(r.header("etag").as_deref(), Some("\"0\""));
    let r = request(
        "GET",
        &s.url("/v1/contexts/ctx"),
        Some(&t),
        &[("If-None-Match", "\"0\"")],
        None,
    );
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag").as_deref(), Some("\"0\""));
    push(
        &s,
        &t,
        "ctx",
        json!({"agent": "builder", "changes": [{"path": "a", "to": 1}]}),
    );
    let r = request(
        "GET",
        &s.url("/v1/contexts/ctx?since=0"),
        Some(&t),
        &[("If-None-Match", "\"0\"")],
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("etag").as_deref(), Some("\"1\""));
    assert_eq!(r.json()["edits"].as_array().unwrap().len(), 1);
}

#[test]
fn yaml_in_and_out() {
    let s = Server::start();
    let t = s.token("builder");
    s.create(&t, "ctx", seed_doc());
    let yaml = "agent: builder\nlevel: critical\nchanges:\n  - path: project_state.active_tasks[id=task-123].status\n    from: in_progress\n    to: completed\n";
    let r = request(
        "POST",
        &s.url("/v1/contexts/ctx/push"),
        Some(&t),
        &[
            ("Content-Type", "application/yaml"),
            ("Accept", "application/yaml"),
        ],
        Some(yaml.as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("content-type").unwrap().contains("yaml"));
    let answer: Value = serde_norway::from_slice(&r.body).unwrap();
    assert_eq!(answer["revision"], 1);
    let as_json = get(&s.url("/v1/contexts/ctx"), &t).json();
    for (accept, query) in [
        ("application/yaml", ""),
        ("application/json", "?format=yaml"),
    ] {
        let r = request(
            "GET",
            &s.url(&format!("/v1/contexts/ctx{query}")),
            Some(&t),
            &[("Accept", accept)],
            None,
        );
        let as_yaml: Value = serde_norway::from_slice(&r.body).unwrap();
        assert_eq!(as_yaml, as_json);
    }
    // text/yaml and application/x-yaml bodies are YAML too.
    for ct in ["text/yaml", "application/x-yaml"] {
        let r = request(
            "POST",
            &s.url("/v1/contexts/ctx/push"),
            Some(&t),
            &[("Content-Type", ct)],
            Some(b"agent: builder\nchanges: [{path: notes, to: hi}]\n"),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

#[test]
fn gzip_and_zstd_decode_to_the_same_json() {
    let s = Server::start();
    let t = s.token("builder");
    s.create(&t, "ctx", seed_doc());
    let plain = get(&s.url("/v1/contexts/ctx"), &t);
    assert!(plain.header("content-encoding").is_none());
    let gz = request(
        "GET",
        &s.url("/v1/contexts/ctx"),
        Some(&t),
        &[("Accept-Encoding", "gzip")],
        None,
    );
    assert_eq!(gz.header("content-encoding").as_deref(), Some("gzip"));
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz.body[..])
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), plain.json());
    let zs = request(
        "GET",
        &s.url("/v1/contexts/ctx"),
        Some(&t),
        &[("Accept-Encoding", "zstd")],
        None,
    );
    assert_eq!(zs.header("content-encoding").as_deref(), Some("zstd"));
    let decoded = zstd::stream::decode_all(&zs.body[..]).unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&decoded).unwrap(),
        plain.json()
    );
    assert!(zs.body.len() < plain.body.len());
    // The ratio is measured from real bytes.
    let m = get(&s.url("/v1/contexts/ctx/metrics"), &t).json();
    let ratio = m["compression_ratio"].as_f64().expect("ratio");
    assert!(ratio > 0.0 && ratio < 1.0, "{m}");
    let prom = request("GET", &s.url("/metrics"), None, &[], None).text();
    let bytes_in = prom
        .lines()
        .find_map(|l| l.strip_prefix("ctxsync_compression_bytes_in_total "))
        .unwrap();
    assert!(
        bytes_in.parse::<u64>().unwrap() >= 2 * plain.body.len() as u64,
        "{prom}"
    );
}

#[test]
fn openapi_describes_every_route() {
    let s = Server::start();
    let r = request("GET", &s.url("/openapi.json"), None, &[], None);
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    let paths: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let expected: BTreeSet<String> = [
        "/v1/whoami",
        "/v1/contexts",
        "/v1/contexts/{ctx}",
        "/v1/contexts/{ctx}/head",
        "/v1/contexts/{ctx}/push",
        "/v1/contexts/{ctx}/events",
        "/v1/contexts/{ctx}/claims",
        "/v1/contexts/{ctx}/agents",
        "/v1/contexts/{ctx}/agents/{agent}/critical",
        "/v1/contexts/{ctx}/seen",
        "/v1/contexts/{ctx}/history",
        "/v1/contexts/{ctx}/log",
        "/v1/contexts/{ctx}/conflicts",
        "/v1/contexts/{ctx}/conflicts/{id}/resolve",
        "/v1/contexts/{ctx}/verify",
        "/v1/contexts/{ctx}/revert",
        "/v1/contexts/{ctx}/syncs",
        "/v1/contexts/{ctx}/snapshot",
        "/v1/contexts/{ctx}/archive",
        "/v1/contexts/{ctx}/archive/run",
        "/v1/contexts/{ctx}/compact",
        "/v1/contexts/{ctx}/metrics",
        "/v1/contexts/{ctx}/trends",
        "/v1/overview",
        "/v1/storage",
        "/v1/agent-sync",
        "/ui",
        "/ui/{asset}",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/mcp",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(paths, expected);
    // Both methods of the context path are described.
    assert!(doc["paths"]["/v1/contexts/{ctx}"]["get"].is_object());
    assert!(doc["paths"]["/v1/contexts/{ctx}"]["put"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["components"]["schemas"]["PushRequest"].is_object());
}

/// A deterministic pseudo-random sequence, so the test is repeatable.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

#[test]
fn deltas_replay_to_the_same_checksum_from_every_revision() {
    let s = Server::start();
    let t = s.token("builder");
    s.create(&t, "ctx", seed_doc());
    let mut rng = Lcg(7);
    for i in 0..40 {
        let change = match rng.next(6) {
            0 => {
                json!({"path": "project_state.active_tasks[-]", "to": {"id": format!("t{i}"), "status": "todo"}})
            }
            1 => json!({"path": "project_state.active_tasks[0].status", "to": format!("s{i}")}),
            2 => json!({"path": "project_state.current_phase", "to": format!("phase {i}")}),
            3 => {
                json!({"path": "project_state.active_tasks", "to": [{"id": "task-123", "status": "reset"}]})
            }
            4 => json!({"op": "remove", "path": "/project_state/active_tasks/0"}),
            _ => json!({"path": "decisions_log.recent[-]", "to": {"id": format!("dec-{i}")}}),
        };
        let r = push(
            &s,
            &t,
            "ctx",
            json!({"agent": "builder", "changes": [change]}),
        );
        assert!(r.status == 200 || r.status == 400, "{}", r.text());
    }
    let head = s.store.head("ctx").unwrap();
    let full = get(&s.url("/v1/contexts/ctx"), &t).json();
    assert_eq!(full["checksum"], head.checksum);
    let mut collapsed_somewhere = false;
    for since in 0..=head.revision {
        let base = get(&s.url(&format!("/v1/contexts/ctx?at={since}")), &t).json();
        assert_eq!(base["revision"], since);
        let delta = get(&s.url(&format!("/v1/contexts/ctx?since={since}")), &t).json();
        assert_eq!(delta["delta"], true);
        assert_eq!(delta["revision"], head.revision);
        assert_eq!(delta["checksum"], head.checksum);
        let edits: Vec<Edit> = serde_json::from_value(delta["edits"].clone()).unwrap();
        let raw: usize = s
            .store
            .log_since("ctx", since)
            .unwrap()
            .iter()
            .map(|e| e.edits.len())
            .sum();
        assert!(edits.len() <= raw);
        collapsed_somewhere |= edits.len() < raw;
        let mut doc = base["document"].clone();
        for e in &edits {
            apply_edit(&mut doc, e).unwrap();
        }
        assert_eq!(checksum(&doc), head.checksum, "delta since {since}");
        // With sections: the sections of the replayed document match.
        let delta = get(
            &s.url(&format!(
                "/v1/contexts/ctx?since={since}&sections=decisions_log"
            )),
            &t,
        )
        .json();
        let edits: Vec<Edit> = serde_json::from_value(delta["edits"].clone()).unwrap();
        assert!(edits
            .iter()
            .all(|e| e.path.to_string().starts_with("decisions_log")));
        let mut part = base["document"].clone();
        for e in &edits {
            apply_edit(&mut part, e).unwrap();
        }
        assert_eq!(part["decisions_log"], full["document"]["decisions_log"]);
    }
    assert!(collapsed_somewhere, "the test should exercise collapsing");
}

#[test]
fn sections_at_and_budget() {
    let s = Server::start();
    let t = s.token("builder");
    s.create(&t, "ctx", seed_doc());
    push(
        &s,
        &t,
        "ctx",
        json!({"agent": "builder", "changes": [{"path": "project_state.current_phase", "to": "review"}]}),
    );
    let r = get(
        &s.url("/v1/contexts/ctx?sections=project_state.blocked_tasks,decisions_log.recent"),
        &t,
    )
    .json();
    assert_eq!(
        r["document"],
        json!({
            "project_state": {"blocked_tasks": seed_doc()["project_state"]["blocked_tasks"]},
            "decisions_log": {"recent": seed_doc()["decisions_log"]["recent"]},
        })
    );
    assert_eq!(r["checksum"], s.store.head("ctx").unwrap().checksum);
    assert!(r.get("omitted").is_none());
    let old = get(&s.url("/v1/contexts/ctx?at=0"), &t).json();
    assert_eq!(old["document"], seed_doc());
    assert_eq!(old["checksum"], checksum(&seed_doc()));
    // A budget smaller than the document.
    let full_tokens = ctxsync_server::budget::count_value(
        &get(&s.url("/v1/contexts/ctx"), &t).json()["document"],
    );
    let budget = full_tokens / 2;
    let r = get(
        &s.url(&format!("/v1/contexts/ctx?budget_tokens={budget}")),
        &t,
    )
    .json();
    let doc = &r["document"];
    assert!(ctxsync_server::budget::count_value(doc) <= budget);
    let omitted: Vec<&str> = r["omitted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(!omitted.is_empty());
    assert_eq!(doc["project_state"]["blocked_tasks"][0]["id"], "task-124");
    assert_eq!(doc["communication"]["pending_questions"][0]["id"], "q-001");
    assert_eq!(doc["project_state"]["active_tasks"][0]["id"], "task-123");
    // A generous budget omits nothing.
    let r = get(&s.url("/v1/contexts/ctx?budget_tokens=100000"), &t).json();
    assert_eq!(r["omitted"], json!([]));
    get(&s.url("/v1/contexts/ctx?since=0&budget_tokens=10"), &t).assert_error(400, "bad_request");
}

#[test]
fn admin_routes() {
    let s = Server::start();
    let planner = s.token("planner");
    let builder = s.token("builder");
    // Create from a template over an empty body.
    let r = request("PUT", &s.url("/v1/contexts/ctx"), Some(&planner), &[], None);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["revision"], 0);
    let list = get(&s.url("/v1/contexts"), &planner).json();
    assert_eq!(list["contexts"][0]["context"], "ctx");
    push(
        &s,
        &planner,
        "ctx",
        json!({"agent": "planner", "level": "critical", "changes": [{"path": "a", "to": 1}]}),
    );
    push(
        &s,
        &builder,
        "ctx",
        json!({"agent": "builder", "changes": [{"path": "b", "to": 2}]}),
    );
    push(
        &s,
        &builder,
        "ctx",
        json!({"agent": "builder", "level": "periodic", "changes": [{"path": "a", "to": 3}]}),
    );
    let h = get(&s.url("/v1/contexts/ctx/history?last=2"), &planner).json();
    let revs: Vec<u64> = h["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(revs, [3, 2]);
    let h = get(&s.url("/v1/contexts/ctx/history?agent=planner"), &planner).json();
    assert_eq!(h["entries"].as_array().unwrap().len(), 1);
    let h = get(&s.url("/v1/contexts/ctx/history?level=periodic"), &planner).json();
    assert_eq!(h["entries"][0]["revision"], 3);
    let l = get(&s.url("/v1/contexts/ctx/log?since=1"), &planner).json();
    let revs: Vec<u64> = l["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(revs, [2, 3]);
    let head = get(&s.url("/v1/contexts/ctx/head"), &planner).json();
    assert_eq!(head["revision"], 3);
    // Revert to 1 as the builder.
    let r = post_json(
        &s.url("/v1/contexts/ctx/revert"),
        &builder,
        &json!({"to": 1}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["revision"], 4);
    let at1 = get(&s.url("/v1/contexts/ctx?at=1"), &planner).json();
    let now = get(&s.url("/v1/contexts/ctx"), &planner).json();
    assert_eq!(at1["checksum"], now["checksum"]);
    let entry = &get(&s.url("/v1/contexts/ctx/history?last=1"), &planner).json()["entries"][0];
    assert_eq!(entry["agent"], "builder");
    let v = post_json(&s.url("/v1/contexts/ctx/verify"), &planner, &json!({})).json();
    assert_eq!(v["ok"], true);
    assert_eq!(v["revision"], 4);
    let r = post_json(
        &s.url("/v1/contexts/ctx/syncs"),
        &builder,
        &json!({"agent": "builder", "level": "periodic", "timestamp_ms": 1_700_000_000_000u64, "duration_us": 0, "outcome": "deferred"}),
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let snap = post_json(&s.url("/v1/contexts/ctx/snapshot"), &planner, &json!({})).json();
    assert_eq!(snap["revision"], 4);
    let m = get(&s.url("/v1/contexts/ctx/metrics"), &planner).json();
    assert_eq!(m["revision"], 4);
    assert!(m["by_level"]["critical"].as_u64().unwrap() >= 1, "{m}");
    let prom = request("GET", &s.url("/metrics"), None, &[], None).text();
    for needle in [
        "ctxsync_context_revision{context=\"ctx\"} 4",
        "ctxsync_pushes_total{outcome=\"applied\"} 3",
        "ctxsync_push_duration_seconds_count",
        "ctxsync_sse_subscribers 0",
        "ctxsync_http_responses_total{class=\"2xx\"}",
        "ctxsync_compression_bytes_out_total",
    ] {
        assert!(prom.contains(needle), "{needle} missing from\n{prom}");
    }
    std::thread::sleep(Duration::from_millis(10));
}
