//! The dashboard's HTTP surface on a real server: the embedded page and assets (types,
//! security headers, ETag revalidation, 404 for unknown files), `GET /v1/overview`
//! and `GET /v1/contexts/{ctx}/trends` (real pushes, a deferred conflict and a recorded
//! failed sync bucketed from the store's sync log; bad input is 4xx), both readable with
//! a viewer token, both in the served OpenAPI description; `GET /v1/agent-sync` with
//! edge values and an abandoned long poll.

mod common;

use common::{get, post_json, request, Server};
use ctxsync_store::Role;
use serde_json::{json, Value};

fn push(s: &Server, token: &str, agent: &str, level: &str, path: &str, to: Value) -> Value {
    let r = post_json(
        &s.url("/v1/contexts/ctx/push"),
        token,
        &json!({"agent": agent, "level": level, "summary": "dash", "changes": [{"path": path, "to": to}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

#[test]
fn the_page_and_its_assets_are_served_with_their_types_and_headers() {
    let s = Server::start();
    let page = request("GET", &s.url("/ui"), None, &[], None);
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap_or_default()
        .starts_with("text/html"));
    assert!(page.text().contains("/ui/app.js"));
    let csp = page.header("content-security-policy").unwrap_or_default();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert_eq!(
        page.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    let script = request("GET", &s.url("/ui/app.js"), None, &[], None);
    assert_eq!(script.status, 200);
    assert!(script
        .header("content-type")
        .unwrap_or_default()
        .starts_with("text/javascript"));
    let tag = script.header("etag").expect("an ETag");
    let again = request(
        "GET",
        &s.url("/ui/app.js"),
        None,
        &[("If-None-Match", &tag)],
        None,
    );
    assert_eq!(again.status, 304);
    let css = request("GET", &s.url("/ui/style.css"), None, &[], None);
    assert!(css
        .header("content-type")
        .unwrap_or_default()
        .starts_with("text/css"));
    for bad in ["/ui/nope.js", "/ui/..%2Fsecret", "/ui/%00"] {
        request("GET", &s.url(bad), None, &[], None).assert_error(404, "not_found");
    }
}

#[test]
fn overview_lists_every_context_with_its_figures_and_the_server_health() {
    let s = Server::start();
    let admin = s.token_with_role("lead", Role::Admin);
    let viewer = s.token_with_role("watcher", Role::Viewer);
    s.create(&admin, "ctx", common::seed_doc());
    let builder = s.token("builder");
    push(
        &s,
        &builder,
        "builder",
        "critical",
        "project_state.a",
        json!(1),
    );
    push(
        &s,
        &builder,
        "builder",
        "periodic",
        "project_state.b",
        json!(2),
    );
    let verified = post_json(&s.url("/v1/contexts/ctx/verify"), &admin, &json!({}));
    assert_eq!(verified.status, 200, "{}", verified.text());
    let r = get(&s.url("/v1/overview"), &viewer);
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["server"]["store"]["ready"], true, "{body}");
    let ctx = &body["contexts"][0];
    assert_eq!(ctx["context"], "ctx");
    assert_eq!(ctx["revision"], 2);
    assert_eq!(ctx["last_change"]["revision"], 2);
    assert_eq!(ctx["last_change"]["agent"], "builder");
    assert_eq!(ctx["syncs_last_minute"]["critical"], 1, "{ctx}");
    assert_eq!(ctx["syncs_last_minute"]["periodic"], 1, "{ctx}");
    assert_eq!(ctx["integrity"]["ok"], true, "{ctx}");
    assert_eq!(ctx["integrity"]["revision"], 2);
    assert!(body["server"]["storage_bytes"].as_u64().unwrap_or(0) > 0);
    request("GET", &s.url("/v1/overview"), None, &[], None).assert_error(401, "unauthorized");
}

#[test]
fn trends_bucket_real_pushes_and_refuse_bad_input() {
    let s = Server::start();
    let admin = s.token_with_role("lead", Role::Admin);
    s.create(&admin, "ctx", common::seed_doc());
    let builder = s.token("builder");
    let reviewer = s.token("reviewer");
    for i in 0..3 {
        push(
            &s,
            &builder,
            "builder",
            "periodic",
            "project_state.n",
            json!(i),
        );
    }
    push(
        &s,
        &reviewer,
        "reviewer",
        "critical",
        "project_state.m",
        json!(true),
    );
    // A deferred conflict (a push), and a failed sync recorded by the client: both are in
    // the store's sync log.
    let deferred = post_json(
        &s.url("/v1/contexts/ctx/push"),
        &builder,
        &json!({"agent": "builder", "strategy": "defer", "summary": "late",
                "changes": [{"path": "project_state.m", "from": false, "to": 1}]}),
    );
    assert_eq!(deferred.status, 409, "{}", deferred.text());
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let failed = post_json(
        &s.url("/v1/contexts/ctx/syncs"),
        &reviewer,
        &json!({"agent": "reviewer", "level": "critical", "timestamp_ms": now_ms,
                "duration_us": 900, "outcome": "failed"}),
    );
    assert_eq!(failed.status, 204, "{}", failed.text());
    for window in ["1h", "24h", "7d"] {
        let r = get(
            &s.url(&format!("/v1/contexts/ctx/trends?window={window}")),
            &admin,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let t = r.json();
        assert_eq!(t["window"], window);
        let buckets = t["buckets"].as_array().expect("buckets");
        assert_eq!(buckets.len(), 60);
        let sum = |key: &str| {
            buckets
                .iter()
                .map(|b| b[key].as_u64().unwrap_or(0))
                .sum::<u64>()
        };
        assert_eq!(sum("revisions"), 4, "{t}");
        assert_eq!(sum("pushes"), 6, "{t}");
        assert_eq!(sum("conflicts"), 1, "{t}");
        assert_eq!(sum("failures"), 1, "{t}");
        let nested = |outer: &str, inner: &str| {
            buckets
                .iter()
                .map(|b| b[outer][inner].as_u64().unwrap_or(0))
                .sum::<u64>()
        };
        assert_eq!(nested("failures_by_level", "critical"), 1, "{t}");
        assert_eq!(nested("pushes_by_level", "periodic"), 3, "{t}");
        assert_eq!(nested("trouble_by_agent", "builder"), 1, "{t}");
        assert_eq!(nested("trouble_by_agent", "reviewer"), 1, "{t}");
        let agents: u64 = buckets
            .iter()
            .map(|b| b["by_agent"]["builder"].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(agents, 3);
        let critical: u64 = buckets
            .iter()
            .map(|b| b["by_level"]["critical"].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(critical, 1);
        assert!(
            buckets.iter().any(|b| b["p95_ms"].as_f64().is_some()),
            "{t}"
        );
    }
    get(&s.url("/v1/contexts/ctx/trends?window=2h"), &admin).assert_error(400, "bad_request");
    get(&s.url("/v1/contexts/nope/trends"), &admin).assert_error(404, "not_found");
    request("GET", &s.url("/v1/contexts/ctx/trends"), None, &[], None)
        .assert_error(401, "unauthorized");
}

#[test]
fn the_new_routes_are_in_the_openapi_description() {
    let s = Server::start();
    let doc = request("GET", &s.url("/openapi.json"), None, &[], None).json();
    for path in [
        "/v1/overview",
        "/v1/contexts/{ctx}/trends",
        "/v1/agent-sync",
        "/ui",
        "/ui/{asset}",
    ] {
        assert!(
            doc["paths"][path]["get"].is_object(),
            "{path} is not described"
        );
    }
    let trends = &doc["paths"]["/v1/contexts/{ctx}/trends"]["get"]["responses"];
    for status in ["200", "400", "401", "404", "503"] {
        assert!(trends[status].is_object(), "trends lacks {status}");
    }
    assert!(doc["components"]["schemas"]["Overview"].is_object());
    assert!(doc["components"]["schemas"]["Trends"].is_object());
    assert!(doc["components"]["schemas"]["AgentSync"].is_object());
    // Every reference resolves (a schema named in a parameter but never registered
    // would make the document invalid).
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap_or_default();
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{name} is referenced but not described"
        );
    }
    let window = &doc["components"]["schemas"]["TrendWindow"]["enum"];
    assert_eq!(window, &json!(["1h", "24h", "7d"]));
}

/// `GET /v1/agent-sync`: off without a feed; with one, the runs and check pushed into it,
/// listed after a position, and a long poll that answers as soon as a run is recorded.
#[test]
fn agent_sync_reports_the_watchers_runs_and_waits_for_the_next() {
    use ctxsync_server::agent_sync::AgentSyncFeed;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    let off = Server::start();
    let viewer = off.token_with_role("boss", Role::Viewer);
    let answer = get(&off.url("/v1/agent-sync"), &viewer);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json(), json!({"enabled": false}));
    request("GET", &off.url("/v1/agent-sync"), None, &[], None).assert_error(401, "unauthorized");

    let feed = Arc::new(AgentSyncFeed::new("/repo", 5));
    let s = Server::with_feed(
        Default::default(),
        Default::default(),
        Some(Arc::clone(&feed)),
    );
    let viewer = s.token_with_role("boss", Role::Viewer);
    let seq = feed.record_run(1, 10, vec![], Ok(json!({"generation": 1, "conflicts": []})));
    feed.record_check(seq, 11, Ok(json!({"broken_files": [{"file": "a.md"}]})));
    let v = get(&s.url("/v1/agent-sync"), &viewer).json();
    assert_eq!(v["enabled"], true);
    assert_eq!(v["root"], "/repo");
    assert_eq!(v["version"], 2);
    assert_eq!(v["runs"][0]["report"]["generation"], 1);
    assert_eq!(v["check"]["report"]["broken_files"][0]["file"], "a.md");
    // After position 1 nothing is listed; the check is still there.
    let v = get(&s.url("/v1/agent-sync?after=1"), &viewer).json();
    assert_eq!(v["runs"], json!([]));
    assert_eq!(v["check"]["after_seq"], 1);

    // A long poll at the current version waits for the next run.
    let url = s.url("/v1/agent-sync?after=1&version=2&wait=20");
    let waiter = std::thread::spawn(move || {
        let started = Instant::now();
        (get(&url, &viewer).json(), started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    feed.record_run(2, 20, vec!["b.md".into()], Err("boom".into()));
    let (v, waited) = waiter.join().unwrap();
    assert_eq!(v["runs"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["runs"][0]["error"], "boom");
    assert_eq!(v["runs"][0]["trigger"], json!(["b.md"]));
    assert!(
        waited < Duration::from_secs(20),
        "answered when the run came"
    );

    let token = s.token("a");
    for bad in ["wait=26", "wait=x", "limit=0", "limit=501"] {
        get(&s.url(&format!("/v1/agent-sync?{bad}")), &token).assert_error(400, "bad_request");
    }
}

/// Edge values of `GET /v1/agent-sync`: negative, overflowing and huge numbers, waits
/// past the maximum, are 400 with a message that names the parameter, never 500; the
/// largest `after` and `version` are plain answers; a long poll whose client goes away
/// stops waiting, and the server answers the next one.
#[test]
fn agent_sync_refuses_edge_values_and_drops_abandoned_polls() {
    use ctxsync_server::agent_sync::AgentSyncFeed;
    use std::io::Write;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    let feed = Arc::new(AgentSyncFeed::new("/repo", 5));
    let s = Server::with_feed(
        Default::default(),
        Default::default(),
        Some(Arc::clone(&feed)),
    );
    let token = s.token_with_role("boss", Role::Viewer);
    feed.record_run(1, 10, vec![], Ok(json!({"generation": 1})));

    let over_u64 = "18446744073709551616";
    for (query, names) in [
        ("after=-1", "after"),
        (&format!("after={over_u64}") as &str, "after"),
        ("after=1.5", "after"),
        ("version=-1", "version"),
        (&format!("version={over_u64}"), "version"),
        ("wait=-1", "wait"),
        ("wait=26", "wait"),
        ("wait=18446744073709551615", "wait"),
        (&format!("wait={over_u64}"), "wait"),
        ("wait=1e3", "wait"),
        ("limit=0", "limit"),
        ("limit=-5", "limit"),
        ("limit=501", "limit"),
        ("limit=18446744073709551615", "limit"),
        (&format!("limit={over_u64}"), "limit"),
        ("limit=99999999999999999999999999999999", "limit"),
    ] {
        let body = get(&s.url(&format!("/v1/agent-sync?{query}")), &token)
            .assert_error(400, "bad_request");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(names), "{query}: {message}");
    }
    // The largest values that fit are answers, not errors.
    let top = u64::MAX;
    let v = get(
        &s.url(&format!(
            "/v1/agent-sync?after={top}&version={top}&limit=500"
        )),
        &token,
    );
    assert_eq!(v.status, 200, "{}", v.text());
    assert_eq!(v.json()["runs"], json!([]));
    // `wait` without `version` answers at once with what there is.
    let v = get(&s.url("/v1/agent-sync?wait=25&limit=1"), &token).json();
    assert_eq!(v["runs"].as_array().map(Vec::len), Some(1), "{v}");

    // An idle long poll whose client gives up: the raw request is sent, the server
    // starts waiting, the client closes the connection, and the wait ends.
    let version = feed.version();
    let addr = s
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        conn,
        "GET /v1/agent-sync?version={version}&wait=25 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    let until = |what: &str, done: &dyn Fn() -> bool| {
        // A deadline well under the poll's 25 s: only a released wait meets it.
        let deadline = Instant::now() + Duration::from_secs(15);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    until("the long poll waits", &|| feed.waiting() == 1);
    drop(conn);
    until("the abandoned long poll stopped waiting", &|| {
        feed.waiting() == 0
    });
    // The server still answers, and a new run still wakes a new poll.
    let url = s.url(&format!("/v1/agent-sync?version={version}&wait=20"));
    let viewer = token.clone();
    let waiter = std::thread::spawn(move || get(&url, &viewer));
    until("the second long poll waits", &|| feed.waiting() == 1);
    feed.record_run(2, 20, vec![], Ok(json!({"generation": 2})));
    let answer = waiter.join().unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(answer.json()["version"].as_u64() > Some(version));
}
