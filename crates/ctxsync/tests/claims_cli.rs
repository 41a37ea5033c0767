//! Claims, presence and the stale-view notice through the real binary: 8 `ctxsync claim`
//! processes racing for one task, 20 rounds, on a shared embedded store and against a
//! real server; the `behind` notice after another agent's pushes; `who`; and the away
//! handover.

mod support;

use std::sync::{Arc, Barrier};

use serde_json::{json, Value};
use support::{Mode, Project};

const TASK: &str = "project_state.active_tasks[id=task-7]";
const CONTENDERS: usize = 8;
const ROUNDS: usize = 20;

fn seeded(mode: Mode, config: &str) -> Project {
    let p = Project::with_config(mode, config);
    p.init();
    p.set_as(
        "planner",
        "project_state.active_tasks",
        "[{id: task-7, status: todo}, {id: task-8, status: todo}]",
    );
    p
}

/// Runs `ctxsync claim TASK` as each agent at once; (agent, exit code, answer) each.
fn race(p: &Project, agents: &[String], ttl: &str) -> Vec<(String, i32, Value)> {
    // Commands (and, remotely, their tokens) are made first, so the processes start
    // together at the barrier.
    let barrier = Arc::new(Barrier::new(agents.len()));
    let runs: Vec<_> = agents
        .iter()
        .map(|agent| {
            let mut cmd = p.cmd(&["claim", TASK, "--ttl", ttl, "--agent", agent, "--json"]);
            let (barrier, agent) = (Arc::clone(&barrier), agent.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let out = cmd.output().expect("run ctxsync claim");
                let answer: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                    panic!(
                        "{agent}: not JSON ({e}): {}\n{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    )
                });
                (agent, out.status.code().unwrap_or(-1), answer)
            })
        })
        .collect();
    runs.into_iter()
        .map(|t| t.join().expect("thread"))
        .collect()
}

fn claim_race(mode: Mode) {
    let p = seeded(mode, "");
    let agents: Vec<String> = (0..CONTENDERS).map(|i| format!("agent-{i}")).collect();
    let mut grants = 0;
    let mut winners = Vec::new();
    for round in 0..ROUNDS {
        let results = race(&p, &agents, "10m");
        let won: Vec<&(String, i32, Value)> = results.iter().filter(|r| r.1 == 0).collect();
        assert_eq!(
            won.len(),
            1,
            "round {round}: exactly one winner: {results:#?}"
        );
        let winner = won[0].0.clone();
        assert_eq!(won[0].2["outcome"], "granted", "round {round}");
        assert_eq!(won[0].2["renewed"], false, "round {round}: {results:#?}");
        for (agent, code, answer) in &results {
            assert!(*code == 0 || *code == 1, "{agent}: exit {code}: {answer}");
            assert_eq!(
                answer["claim"]["holder"],
                json!(winner),
                "{agent} sees the winner"
            );
            assert_eq!(answer["claim"]["path"], TASK);
            if *code == 1 {
                assert_eq!(answer["outcome"], "held");
            }
        }
        grants += won.len();
        // Free the task for the next round: by release on even rounds, by letting it
        // expire on odd ones (the holder renews it to 1 ms), so an expired claim must be
        // taken over by the next winner.
        if round % 2 == 0 {
            p.ok(&["release", TASK, "--agent", &winner]);
        } else {
            p.ok(&["claim", TASK, "--ttl", "1ms", "--agent", &winner]);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        winners.push(winner);
    }
    assert_eq!(grants, ROUNDS, "0 double grants");
    // The op log agrees: one claim revision per round, each by that round's winner.
    let history = p.json(&["history", "--last", "1000"]);
    let entries = history
        .as_array()
        .or_else(|| history["entries"].as_array())
        .expect("history entries")
        .clone();
    let claims: Vec<String> = entries
        .iter()
        .rev()
        .filter(|e| {
            e["summary"]
                .as_str()
                .is_some_and(|s| s.starts_with("claim "))
        })
        .map(|e| e["agent"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(claims, winners, "one granted claim revision per round");
}

#[test]
fn eight_processes_race_for_a_claim_embedded() {
    claim_race(Mode::Embedded);
}

#[test]
fn eight_processes_race_for_a_claim_remote() {
    claim_race(Mode::Remote);
}

fn claims_are_enforced(mode: Mode) {
    let p = seeded(mode, "");
    p.ok(&["claim", TASK, "--ttl", "10m", "--agent", "builder"]);
    let held = p.run(&[
        "claim",
        "project_state.active_tasks[0]",
        "--agent",
        "reviewer",
    ]);
    assert_eq!(held.status.code(), Some(1));
    let text = String::from_utf8_lossy(&held.stdout);
    assert!(text.contains("held by builder"), "{text}");
    // A write by another agent is refused with `claimed` and changes nothing.
    let out = p.run(&[
        "set",
        "project_state.active_tasks[id=task-7].status",
        "done",
        "--agent",
        "reviewer",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let answer: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(answer["rejected"][0]["reason"], "claimed");
    assert_eq!(answer["rejected"][0]["owners"], json!(["builder"]));
    assert_eq!(
        p.ok(&["get", "project_state.active_tasks[id=task-7].status"])
            .trim(),
        "todo"
    );
    // The holder may; force overrides; release by another is refused.
    p.set_as(
        "builder",
        "project_state.active_tasks[id=task-7].status",
        "doing",
    );
    p.ok(&[
        "set",
        "project_state.active_tasks[id=task-7].status",
        "forced",
        "--agent",
        "reviewer",
        "--strategy",
        "force",
    ]);
    let out = p.run(&["release", TASK, "--agent", "reviewer"]);
    assert_eq!(out.status.code(), Some(1));
    p.ok(&["release", TASK, "--agent", "builder"]);
    // Bad input: exit 2, nothing written.
    let before = p.revision();
    for bad in [
        vec!["claim", TASK, "--ttl", "0s", "--agent", "x"],
        vec!["claim", TASK, "--ttl", "soon", "--agent", "x"],
        vec!["claim", "project_state.active_tasks[-]", "--agent", "x"],
        vec!["claim", "a..b", "--agent", "x"],
    ] {
        let out = p.run(&bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {out:?}");
    }
    assert_eq!(p.revision(), before);
}

#[test]
fn claims_are_enforced_embedded() {
    claims_are_enforced(Mode::Embedded);
}

#[test]
fn claims_are_enforced_remote() {
    claims_are_enforced(Mode::Remote);
}

fn stale_notice(mode: Mode) {
    let p = seeded(mode, "");
    let first = p.json(&["set", "communication.b", "1", "--agent", "b"]);
    let seen = first["revision"].as_u64().expect("revision");
    p.set_as("a", "project_state.active_tasks[id=task-8].status", "doing");
    p.set_as(
        "a",
        "decisions_log.recent[-]",
        "{id: d1, decision: use sqlite}",
    );
    p.set_as("a", "technical_context.stack", "[rust]");
    let next = p.json(&["set", "communication.b", "2", "--agent", "b"]);
    assert_eq!(next["behind"], 3, "{next}");
    assert_eq!(next["since_revision"], seen, "{next}");
    assert_eq!(
        next["changed_sections"],
        json!([
            "decisions_log.recent",
            "project_state.active_tasks",
            "technical_context.stack"
        ]),
        "{next}"
    );
    // Told once.
    let again = p.json(&["set", "communication.b", "3", "--agent", "b"]);
    assert_eq!(again["behind"], 0, "{again}");
}

#[test]
fn stale_notice_embedded() {
    stale_notice(Mode::Embedded);
}

#[test]
fn stale_notice_remote() {
    stale_notice(Mode::Remote);
}

fn stale_notice_on_a_pull(mode: Mode) {
    let p = seeded(mode, "");
    let run = |args: &[&str], agent: &str| -> Value {
        let mut cmd = p.cmd(args);
        cmd.env("CTXSYNC_AGENT", agent);
        if let Some(server) = &p.server {
            cmd.env("CTXSYNC_TOKEN", server.token(agent));
        }
        let out = cmd.output().expect("run ctxsync");
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stderr)))
    };
    run(&["pull", "--json"], "b");
    p.set_as("a", "project_state.current_phase", "build");
    p.set_as("a", "project_state.current_phase", "test");
    let view = run(&["pull", "--json"], "b");
    assert_eq!(view["behind"], 2, "{view}");
    assert_eq!(
        view["changed_sections"],
        json!(["project_state.current_phase"])
    );
    assert!(view["document"].is_object());
    // A working-copy pull and a claim carry it too.
    p.set_as("a", "technical_context.stack", "[rust]");
    let view = run(&["pull", "--json", "--agent", "b"], "b");
    assert_eq!(view["behind"], 1, "{view}");
    assert_eq!(view["changed_sections"], json!(["technical_context.stack"]));
    p.set_as("a", "decisions_log.recent[-]", "{id: d9, decision: x}");
    let view = run(
        &[
            "claim",
            "project_state.current_phase",
            "--ttl",
            "1m",
            "--json",
        ],
        "b",
    );
    assert_eq!(view["behind"], 1, "{view}");
    assert_eq!(view["changed_sections"], json!(["decisions_log.recent"]));
}

#[test]
fn stale_notice_on_an_embedded_pull() {
    stale_notice_on_a_pull(Mode::Embedded);
}

#[test]
fn stale_notice_on_a_remote_pull() {
    stale_notice_on_a_pull(Mode::Remote);
}

fn who_lists_presence(mode: Mode) {
    let p = seeded(mode, "");
    p.ok(&["claim", TASK, "--ttl", "10m", "--agent", "builder"]);
    p.json(&["set", "communication.x", "1", "--agent", "builder"]);
    p.ok(&[
        "set",
        "project_state.blocked_tasks",
        "[task-8]",
        "--agent",
        "planner",
        "--level",
        "critical",
    ]);
    let critical = p.revision();
    let who = p.json(&["who"]);
    let agents = who["agents"].as_array().expect("agents");
    let find = |name: &str| {
        agents
            .iter()
            .find(|a| a["agent"] == name)
            .unwrap_or_else(|| panic!("{name} in {who}"))
            .clone()
    };
    let builder = find("builder");
    assert_eq!(builder["claims"][0]["path"], TASK);
    assert_eq!(builder["unseen_critical"], json!([critical]));
    assert_eq!(builder["lag"], 1);
    assert_eq!(builder["away"], false);
    let planner = find("planner");
    assert_eq!(planner["unseen_critical"], json!([]));
    assert_eq!(planner["lag"], 0);
    let table = p.ok(&["who"]);
    assert!(table.starts_with("AGENT"), "{table}");
    assert!(table.contains(TASK), "{table}");
    assert!(table.contains(&critical.to_string()), "{table}");
}

#[test]
fn who_lists_presence_embedded() {
    who_lists_presence(Mode::Embedded);
}

#[test]
fn who_lists_presence_remote() {
    who_lists_presence(Mode::Remote);
}

fn away_handover(mode: Mode) {
    let p = seeded(mode, "[store]\naway_after = \"1ms\"\n");
    p.ok(&["claim", TASK, "--ttl", "1ms", "--agent", "builder"]);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let before = p.revision();
    let who = p.json(&["who"]);
    let builder = who["agents"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["agent"] == "builder"))
        .cloned()
        .expect("builder listed");
    assert_eq!(builder["away"], true, "{who}");
    assert_eq!(builder["claims"], json!([]));
    assert_eq!(p.revision(), before + 1, "one handover revision");
    let stubs: Value = serde_json::from_str(&p.ok(&["get", "communication.handovers", "--json"]))
        .expect("handovers");
    assert_eq!(stubs[0]["from"], "builder");
    assert_eq!(stubs[0]["reason"], "away");
    assert_eq!(stubs[0]["to"], Value::Null);
    assert_eq!(stubs[0]["claims"], json!([TASK]));
    // Idempotent: asking again writes nothing.
    p.json(&["who"]);
    assert_eq!(p.revision(), before + 1);
}

#[test]
fn away_handover_embedded() {
    away_handover(Mode::Embedded);
}

#[test]
fn away_handover_remote() {
    away_handover(Mode::Remote);
}
