//! Benchmark harness for the embedded store and the core algorithms.
//!
//! `cargo bench -p ctxsync-store --bench store_bench` prints:
//! * durable single-change pushes per second with 1 and 8 writer threads (group commit,
//!   synchronous=FULL), with p50/p99 latency;
//! * apply, diff and three-way merge on a generated ~100 KB context.
//!
//! Figures only, no assertions: the machine is shared and noisy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ctxsync_core::{apply_change, diff, merge3, Change, Level, Prefer, PushRequest, Strategy};
use ctxsync_store::{SqliteStore, Store, StoreOptions};
use serde_json::{json, Value};

/// A context shaped like the seed's, grown to about `bytes` of canonical JSON.
fn synthetic_context(bytes: usize) -> Value {
    let mut tasks = Vec::new();
    let mut decisions = Vec::new();
    let mut i = 0;
    let mut doc = json!({});
    while ctxsync_core::checksum_and_size(&doc).1 < bytes as u64 {
        tasks.push(json!({"id": format!("task-{i}"), "status": "in_progress", "owner": "builder",
            "started": "2026-11-21T09:00:00Z", "summary": format!("Implement part {i} of the sync engine")}));
        decisions.push(json!({"id": format!("dec-{i}"), "type": "architecture",
            "decision": format!("Decision number {i} about caching"), "rationale": "Better performance than the DB",
            "impact": ["auth", "session"], "decided_by": "planner"}));
        i += 1;
        doc = json!({"project_state": {"current_phase": "implementation", "active_tasks": tasks},
                     "decisions_log": {"recent": decisions, "archived_count": 0}});
    }
    doc
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

/// A durable store (default options: synchronous=FULL) in a temp dir, with one context.
fn bench_store() -> (tempfile::TempDir, Arc<SqliteStore>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(
        SqliteStore::open(dir.path().join("bench.db"), StoreOptions::default())
            .expect("open store"),
    );
    store
        .create_context("default", json!({"counters": {}}))
        .expect("create context");
    (dir, store)
}

/// Writer `t`'s `i`-th push: one change to its own counter.
fn bench_request(t: usize, i: usize) -> PushRequest {
    PushRequest {
        agent: format!("agent-{t}"),
        level: Level::Checkpoint,
        base_revision: None,
        // Clients use ULIDs: time-ordered, so the idempotency index grows at its end
        // like the op log.
        request_id: Some(ulid::Ulid::new().to_string()),
        strategy: Strategy::Merge,
        summary: String::new(),
        changes: vec![Change::set(
            ctxsync_core::Path::parse(&format!("counters.a{t}")).expect("path"),
            json!(i),
        )],
    }
}

/// `threads` writer threads that each keep `in_flight` pushes outstanding (through
/// `push_then`): every push is answered only once durable. With one in flight a thread
/// waits for each commit before its next push (a closed loop); with more, it behaves as
/// a server's workers do.
fn push_throughput(threads: usize, in_flight: usize, per_thread: usize) {
    let (_dir, store) = bench_store();
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let (done_tx, done_rx) = std::sync::mpsc::channel::<(Instant, bool)>();
                let mut latencies = Vec::with_capacity(per_thread);
                let mut sent = 0;
                let mut outstanding = 0;
                while latencies.len() < per_thread {
                    while outstanding < in_flight && sent < per_thread {
                        let request = bench_request(t, sent);
                        let tx = done_tx.clone();
                        let t0 = Instant::now();
                        store.push_then(
                            "default",
                            request,
                            Box::new(move |r| {
                                let _ = tx.send((t0, r.is_ok()));
                            }),
                        );
                        sent += 1;
                        outstanding += 1;
                    }
                    let (t0, ok) = done_rx.recv().expect("answer");
                    assert!(ok, "push failed");
                    latencies.push(t0.elapsed());
                    outstanding -= 1;
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("thread"))
        .collect();
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let total = threads * per_thread;
    let rate = total as f64 / elapsed.as_secs_f64();
    // With one push in flight per thread, at most `threads` pushes share one fsync and
    // the figure measures commit latency; the throughput target is judged where enough
    // pushes are in flight to fill a batch.
    let verdict = match threads * in_flight {
        1 => String::new(),
        n if n < 64 => format!("  [closed loop: at most {n} pushes per fsync]"),
        _ if rate >= 20_000.0 => "  [target >= 20,000/s: MET]".to_owned(),
        _ => "  [target >= 20,000/s: NOT MET]".to_owned(),
    };
    println!(
        "embedded durable push, {threads} writer thread(s) x {in_flight} in flight: {total} pushes in {:.2} s = {rate:.0} pushes/s, p50 {:.3} ms, p99 {:.3} ms{verdict}",
        elapsed.as_secs_f64(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
    );
    let report = store.verify("default").expect("verify");
    assert!(
        report.ok,
        "verify after the benchmark: {:?}",
        report.problems
    );
}

fn time<T>(label: &str, iterations: u32, mut f: impl FnMut() -> T) {
    let mut samples = Vec::with_capacity(iterations as usize);
    for _ in 0..iterations {
        let t0 = Instant::now();
        std::hint::black_box(f());
        samples.push(t0.elapsed());
    }
    samples.sort_unstable();
    println!(
        "{label}: median {:.3} ms, p99 {:.3} ms ({iterations} runs)",
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3
    );
}

fn core_algorithms() {
    let base = synthetic_context(100 * 1024);
    let size = ctxsync_core::checksum_and_size(&base).1;
    let change = Change::from_json(
        0,
        &json!({"path": "project_state.active_tasks[id=task-100].status", "from": "in_progress", "to": "completed"}),
    )
    .expect("change");
    let mut mine = base.clone();
    apply_change(&mut mine, &change).expect("apply");
    let mut theirs = base.clone();
    apply_change(
        &mut theirs,
        &Change::from_json(0, &json!({"path": "decisions_log.archived_count", "to": 3}))
            .expect("change"),
    )
    .expect("apply");
    println!("core on a {size}-byte context:");
    let mut doc = base.clone();
    time("  apply one change (+ undo)", 2000, || {
        let edits = apply_change(&mut doc, &change).expect("apply");
        ctxsync_core::apply::undo(&mut doc, &edits).expect("undo");
    });
    time("  checksum (BLAKE3 of canonical JSON)", 500, || {
        ctxsync_core::checksum(&base)
    });
    time("  diff (one field changed)", 500, || diff(&base, &mine));
    time("  merge3 (disjoint edits)", 500, || {
        merge3(&base, &mine, &theirs, Prefer::Theirs)
    });
}

fn main() {
    // `cargo bench` passes `--bench`; `push` or `core` run one part, `--quick` fewer pushes.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only = |part: &str| {
        let parts: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
        parts.is_empty() || parts.iter().any(|a| *a == part)
    };
    let n = if quick { 500 } else { 4000 };
    if only("push") {
        push_throughput(1, 1, n);
        push_throughput(8, 1, n);
        // As many writers as the server benchmark's agents, and 8 writers with 8 pushes
        // in flight each: what group commit does when a batch can fill.
        push_throughput(64, 1, n / 4);
        push_throughput(8, 8, n);
    }
    if only("core") {
        core_algorithms();
    }
}
