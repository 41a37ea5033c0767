//! The MCP server driven by a real MCP client — the official Python SDK (`mcp==2.3.0`,
//! which `.ci/run` installs) — over `ctxsync mcp` on stdio (embedded store, and remote
//! mode through a real server) and over `ctxsync serve`'s `/mcp` (Streamable HTTP), each
//! in both protocol revisions: 2025-11-25 (initialize handshake) and 2026-07-28
//! (stateless, no initialize).
//!
//! The scenarios live in `crates/ctxsync-mcp/tests/py/scenarios.py`. Without Python's
//! `mcp` package these tests say SKIPPED on stderr and pass; the HTTP checks of our own
//! (Origin, token) run regardless.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use support::{Mode, Project};

/// The modes a client speaks: the handshake revision, and the stateless one.
const MODES: [&str; 2] = ["legacy", "2026-07-28"];

fn python_mcp() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import mcp, mcp_types, httpx2"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "SKIPPED: the Python MCP client is missing; install it with `pip install mcp==2.3.0`"
        );
    }
    ok
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ctxsync-mcp/tests/py/scenarios.py")
}

/// Environment per agent for the stdio clients (and the CLI they start): in remote mode
/// the server and that agent's token.
fn agent_env(project: &Project, agents: &[&str]) -> Value {
    let mut env = serde_json::Map::new();
    for agent in agents {
        let vars = match &project.server {
            Some(server) => {
                json!({"CTXSYNC_SERVER": server.url(), "CTXSYNC_TOKEN": server.token(agent)})
            }
            None => json!({}),
        };
        env.insert((*agent).to_owned(), vars);
    }
    env.insert(String::new(), json!({}));
    Value::Object(env)
}

fn run(scenario: &str, config: &Value) {
    let out = Command::new("python3")
        .arg(script())
        .arg(scenario)
        .env("CTXSYNC_MCP_TEST", config.to_string())
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scenario {scenario} ({}) failed:\n{stdout}\n{stderr}",
        config["mode"]
    );
    eprintln!(
        "{scenario} [{}, {}]: {}",
        config["transport"],
        config["mode"],
        stdout.trim()
    );
}

const AGENTS: [&str; 3] = ["alice", "bob", "carol"];

fn stdio(mode: Mode, scenarios: &[&str]) {
    if !python_mcp() {
        return;
    }
    for protocol in MODES {
        let project = Project::new(mode);
        project.init();
        let config = json!({
            "bin": assert_cmd::cargo::cargo_bin("ctxsync"),
            "cwd": project.path(),
            "transport": "stdio",
            "mode": protocol,
            "env": agent_env(&project, &AGENTS),
        });
        for scenario in scenarios {
            run(scenario, &config);
        }
    }
}

#[test]
fn stdio_embedded_tools_schemas_conflicts_and_claims() {
    stdio(Mode::Embedded, &["schemas", "conflict", "claims_handover"]);
}

#[test]
fn stdio_embedded_wait() {
    stdio(Mode::Embedded, &["wait"]);
}

#[test]
fn stdio_embedded_bad_input_and_no_agent() {
    stdio(Mode::Embedded, &["bad_input", "no_agent"]);
}

#[test]
fn stdio_embedded_resources_and_subscriptions() {
    if !python_mcp() {
        return;
    }
    // resources/subscribe belongs to the handshake revision, subscriptions/listen to
    // the stateless one.
    for (protocol, scenario) in [("legacy", "subscribe"), ("2026-07-28", "listen")] {
        let project = Project::new(Mode::Embedded);
        project.init();
        let config = json!({
            "bin": assert_cmd::cargo::cargo_bin("ctxsync"), "cwd": project.path(),
            "transport": "stdio", "mode": protocol, "env": agent_env(&project, &AGENTS),
        });
        run(scenario, &config);
    }
}

#[test]
fn stdio_remote_mode_through_a_server() {
    stdio(Mode::Remote, &["schemas", "conflict", "wait"]);
}

/// A project in remote mode, and the config for clients of its server's `/mcp`.
fn http_config(project: &Project, protocol: &str) -> Value {
    let server = project.server.as_ref().expect("remote mode");
    let tokens: serde_json::Map<String, Value> = AGENTS
        .iter()
        .map(|a| ((*a).to_owned(), json!(server.token(a))))
        .collect();
    json!({
        "bin": assert_cmd::cargo::cargo_bin("ctxsync"),
        "cwd": project.path(),
        "transport": "http",
        "mode": protocol,
        "url": format!("{}/mcp", server.url()),
        "tokens": tokens,
        "env": agent_env(project, &AGENTS),
    })
}

#[test]
fn http_mcp_both_protocol_revisions() {
    if !python_mcp() {
        return;
    }
    for protocol in MODES {
        let project = Project::new(Mode::Remote);
        project.init();
        let config = http_config(&project, protocol);
        for scenario in [
            "schemas",
            "conflict",
            "wait",
            "bad_input",
            "claims_handover",
        ] {
            run(scenario, &config);
        }
    }
}

struct Answer {
    status: u16,
    body: String,
}

fn post(url: &str, headers: &[(&str, String)], body: &Value) -> Answer {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let mut builder = ureq::http::Request::builder()
        .method("POST")
        .uri(url)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream");
    for (k, v) in headers {
        builder = builder.header(*k, v);
    }
    let mut response = agent
        .run(builder.body(body.to_string()).expect("request"))
        .expect("the server answers");
    Answer {
        status: response.status().as_u16(),
        body: response.body_mut().read_to_string().unwrap_or_default(),
    }
}

#[test]
fn http_mcp_checks_origin_and_token() {
    let project = Project::new(Mode::Remote);
    project.init();
    let server = project.server.as_ref().expect("remote mode");
    let url = format!("{}/mcp", server.url());
    let token = server.token("alice");
    let bearer = ("Authorization", format!("Bearer {token}"));
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"}}});
    // No token, a wrong token: 401 with a challenge, before any MCP handling.
    let none = post(&url, &[], &initialize);
    assert_eq!(none.status, 401, "{}", none.body);
    let wrong = post(
        &url,
        &[("Authorization", "Bearer nope".into())],
        &initialize,
    );
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    // A web page of another site: 403, even with a valid token.
    for origin in [
        "https://evil.example",
        "http://localhost.evil.example",
        "null",
    ] {
        let foreign = post(
            &url,
            &[bearer.clone(), ("Origin", origin.into())],
            &initialize,
        );
        assert_eq!(foreign.status, 403, "{origin}: {}", foreign.body);
    }
    // No Origin (a non-browser client) and loopback origins pass.
    let plain = post(&url, std::slice::from_ref(&bearer), &initialize);
    assert_eq!(plain.status, 200, "{}", plain.body);
    assert!(
        plain.body.contains("\"protocolVersion\":\"2025-11-25\""),
        "{}",
        plain.body
    );
    for origin in [
        "http://localhost:5173",
        "http://127.0.0.1",
        "http://[::1]:8080",
    ] {
        let local = post(
            &url,
            &[bearer.clone(), ("Origin", origin.into())],
            &initialize,
        );
        assert_eq!(local.status, 200, "{origin}: {}", local.body);
    }
    // The stateless revision: one self-contained request, no session.
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"}}}});
    let listed = post(
        &url,
        &[
            bearer.clone(),
            ("MCP-Protocol-Version", "2026-07-28".into()),
            ("Mcp-Method", "tools/list".into()),
        ],
        &list,
    );
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert!(
        listed.body.contains("\"name\":\"handover\""),
        "{}",
        listed.body
    );
}
