//! Remote mode only: what happens when the server is away (the outbox), and the
//! client's integrity checks on deltas. A real `ctxsync serve` child, killed and started
//! again on the same port.

mod support;

use serde_json::{json, Value};
use support::{Mode, Project};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn pushes_wait_in_the_outbox_and_apply_once_in_order() {
    let mut p = Project::new(Mode::Remote);
    p.init();
    p.ok(&["set", "counter", "0"]);
    // Applied while the server is up; the same request id queued later must not apply
    // again (the answer of a push can be lost after the server committed it).
    let once = p.write(
        "once.yaml",
        "- {path: \"communication.notes[-]\", to: once}\n",
    );
    let once = once.to_str().unwrap();
    p.ok(&[
        "push",
        "--file",
        once,
        "--request-id",
        "01JDSAMEREQUEST00000000001",
    ]);
    let before = p.revision();

    p.server.as_mut().unwrap().kill();
    for n in 1..=3 {
        let out = p.run(&["set", "counter", &n.to_string()]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(stderr(&out).contains("queued"), "{}", stderr(&out));
        // Said on stdout too, where a script looks.
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("queued ({n} in the outbox)\n")
        );
    }
    let out = p.run(&[
        "push",
        "--file",
        once,
        "--request-id",
        "01JDSAMEREQUEST00000000001",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let queued: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(queued["queued"], true, "{queued}");
    assert_eq!(queued["outbox_pending"], 4, "{queued}");
    assert_eq!(queued["request_id"], "01JDSAMEREQUEST00000000001");
    // status says the server is away and what waits.
    let out = p.run(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["reachable"], false);
    assert_eq!(status["outbox"]["pending"], 4, "{status}");
    // Reads fail clearly (exit 3), and change nothing in the queue.
    let out = p.run(&["get", "counter"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot reach the server"),
        "{}",
        stderr(&out)
    );

    p.server.as_mut().unwrap().restart();
    // The next command delivers the queue first, in order.
    let out = p.run(&["get", "counter"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");
    let delivered = stderr(&out);
    assert_eq!(
        delivered.matches("outbox: delivered").count(),
        4,
        "{delivered}"
    );
    assert!(delivered.contains("already applied"), "{delivered}");
    // Three new revisions (counter 1, 2, 3); the replayed request added none.
    assert_eq!(p.revision(), before + 3);
    let history = p.json(&["history", "--last", "3"]);
    let values: Vec<Value> = history
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|e| e["edits"][0]["new"].clone())
        .collect();
    assert_eq!(values, [json!(1), json!(2), json!(3)]);
    assert_eq!(p.json(&["get", "communication.notes"]), json!(["once"]));
    assert_eq!(p.json(&["status"])["outbox"]["pending"], 0);
    assert!(p.ok(&["verify"]).starts_with("ok"));
}

#[test]
fn a_delta_that_does_not_check_out_falls_back_to_a_full_pull() {
    let p = Project::new(Mode::Remote);
    p.init();
    p.ok(&["pull", "--agent", "builder"]);
    // Corrupt the remembered base where no later revision writes: a delta applied to it
    // cannot reproduce the server's checksum.
    let base_file = p.path().join(".ctxsync/agents/builder/base.json");
    let mut base: Value =
        serde_json::from_str(&std::fs::read_to_string(&base_file).unwrap()).unwrap();
    base["document"]["version"] = json!("tampered");
    std::fs::write(&base_file, serde_json::to_vec(&base).unwrap()).unwrap();
    let file = p.path().join(".ctxsync/agents/builder/context.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("version: '2.0'", "version: tampered")).unwrap();
    p.set_as("planner", "project_state.current_phase", "review");
    let out = p
        .cmd(&["sync", "--agent", "builder"])
        .env("CTXSYNC_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("checksum mismatch after applying a delta"),
        "{}",
        stderr(&out)
    );
    let base: Value = serde_json::from_str(&std::fs::read_to_string(&base_file).unwrap()).unwrap();
    assert_eq!(
        base["document"]["version"], "2.0",
        "the full pull replaced the bad base"
    );
    assert_eq!(base["document"]["project_state"]["current_phase"], "review");
}

#[test]
fn a_server_setting_that_is_not_a_url_is_an_input_error_and_queues_nothing() {
    let p = Project::new(Mode::Embedded);
    p.init();
    let out = p
        .cmd(&["set", "x", "1"])
        .env("CTXSYNC_SERVER", "localhost:7711")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("is not a URL"), "{}", stderr(&out));
    assert!(!p.path().join(".ctxsync/outbox").exists());
    assert_eq!(p.revision(), 0);
}

/// `watch` with the server away: one line when it goes, exponential backoff (not a
/// failure every few hundred milliseconds), one line when it is back, no colour codes
/// in a log that is not a terminal; the edit made meanwhile is pushed once it is back.
#[test]
fn remote_watch_backs_off_and_reports_only_changes_of_state() {
    let mut p = Project::new(Mode::Remote);
    p.init();
    p.ok(&["pull", "--agent", "builder"]);
    p.server.as_mut().unwrap().kill();
    let (mut watch, log) = p.spawn_logged(&["watch", "--agent", "builder", "--debounce-ms", "100"]);
    let file = p.path().join(".ctxsync/agents/builder/context.yaml");
    assert!(support::eventually(
        std::time::Duration::from_secs(30),
        || log.count("server unreachable, retrying in") == 1
    ));
    // A checkpoint edit while the server is away: tried, and kept.
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace("current_phase: planning", "current_phase: build"),
    )
    .unwrap();
    // Several seconds of an unreachable server (the old loop printed a failure on every
    // poll, about 10 a second between the two threads).
    std::thread::sleep(std::time::Duration::from_secs(5));
    let down = log.text();
    p.server.as_mut().unwrap().restart();
    let back = support::eventually(std::time::Duration::from_secs(60), || {
        log.count("reconnected") == 1
            && p.try_json(&["get", "project_state.current_phase"]) == Some(json!("build"))
    });
    watch.kill();
    let all = log.text();
    assert_eq!(log.count("unreachable"), 1, "{down}");
    assert!(!down.contains("sync failed"), "{down}");
    assert!(
        back,
        "not reconnected, or the held edit was not pushed: {all}"
    );
    assert!(
        !all.contains('\u{1b}'),
        "colour codes in a log file: {all:?}"
    );
}
