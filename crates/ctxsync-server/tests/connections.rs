//! Connection limits against a real server on loopback (issue 10, item 6): clients that
//! hold sockets, send nothing or trickle bytes do not starve the others; silent and
//! trickling clients are cut by the header and body timeouts; a stalled stream by the
//! idle timeout; event streams outlive both; the cap holds; shutdown is not held up
//! by idle sockets.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ctxsync_server::{AppState, ServerConfig};
use ctxsync_store::{SqliteStore, Store, StoreOptions};
use serde_json::json;

/// How long a test waits for something that must happen (a close, an answer).
const WAIT: Duration = Duration::from_secs(10);

fn server(config: ServerConfig) -> Server {
    Server::with(StoreOptions::default(), config)
}

fn connect(addr: &str) -> TcpStream {
    let socket = TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    socket
}

/// `GET /healthz` on a new connection: the status line's code, or None when no answer
/// came within `timeout`.
fn healthz(addr: &str, timeout: Duration) -> Option<u16> {
    let mut socket = TcpStream::connect(addr).ok()?;
    socket.set_read_timeout(Some(timeout)).unwrap();
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).ok()?;
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace().nth(1)?.parse().ok()
}

/// Reads until the server closes the connection; `Ok(bytes)` then, `Err` when the read
/// timed out first (the server kept it open).
fn read_until_closed(socket: &mut TcpStream) -> Result<Vec<u8>, std::io::Error> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match socket.read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            // A reset is the server closing too (it dropped unread bytes).
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(got),
            Err(e) => return Err(e),
        }
    }
}

/// True while the server keeps `socket` open: nothing to read, no end of stream.
fn still_open(socket: &TcpStream) -> bool {
    socket.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let open = matches!((&*socket).read(&mut byte), Err(e) if e.kind() == ErrorKind::WouldBlock);
    socket.set_nonblocking(false).unwrap();
    open
}

#[test]
fn healthz_answers_while_2000_idle_and_slowloris_connections_are_held() {
    // 2,000 client sockets plus the server's 2,000 live in this one process.
    let limit = ctxsync_server::limits::raise_fd_limit().unwrap();
    if let Some(soft) = limit.soft {
        assert!(
            soft >= 4_600,
            "RLIMIT_NOFILE {soft} is too low for this test"
        );
    }
    // Timeouts far longer than the test, so that on a loaded machine (opening 2,000
    // sockets can take seconds) none of the held connections is closed by them: the
    // point is that they are all held while /healthz answers.
    let s = server(ServerConfig {
        header_read_timeout: Duration::from_secs(600),
        idle_timeout: Duration::from_secs(600),
        ..ServerConfig::default()
    });
    let idle: Vec<TcpStream> = (0..2_000).map(|_| connect(&s.addr)).collect();
    // Slowloris: a request head one byte a second, never finished.
    let stop = Arc::new(AtomicBool::new(false));
    let trickle = {
        let addr = s.addr.clone();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut slow: Vec<TcpStream> = (0..50).map(|_| connect(&addr)).collect();
            let head = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaa";
            let mut sent = 0;
            while !stop.load(Ordering::Relaxed) {
                for socket in &mut slow {
                    let _ = socket.write_all(&head[sent % head.len()..][..1]);
                }
                sent += 1;
                std::thread::sleep(Duration::from_millis(900));
            }
            slow
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    for attempt in 0..3 {
        let started = Instant::now();
        let status = healthz(&s.addr, WAIT);
        let took = started.elapsed();
        assert_eq!(status, Some(200), "attempt {attempt}");
        assert!(
            took < Duration::from_secs(1),
            "attempt {attempt}: /healthz took {took:?} with 2,050 connections held"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let slow = trickle.join().unwrap();
    // The load was real: the server still holds every one of them.
    let open = idle.iter().chain(&slow).filter(|s| still_open(s)).count();
    assert_eq!(open, 2_050);
}

#[test]
fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let s = server(ServerConfig {
        header_read_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    });
    let mut silent = connect(&s.addr);
    let got = read_until_closed(&mut silent).expect("the server kept a silent connection open");
    assert!(
        got.is_empty() || got.starts_with(b"HTTP/1.1 408"),
        "{got:?}"
    );
}

#[test]
fn a_head_sent_a_byte_at_a_time_is_cut_by_the_header_timeout() {
    let s = server(ServerConfig {
        header_read_timeout: Duration::from_millis(500),
        ..ServerConfig::default()
    });
    let mut slow = connect(&s.addr);
    slow.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    let started = Instant::now();
    // Keeps sending header bytes (each one "progress") well past the timeout.
    let mut cut = false;
    while started.elapsed() < WAIT {
        if slow.write_all(b"X").is_err() || !still_open(&slow) {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(cut, "a head trickled for {WAIT:?} was never cut");
}

#[test]
fn a_kept_alive_connection_is_closed_when_idle_between_requests() {
    let s = server(ServerConfig {
        header_read_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    });
    let mut socket = connect(&s.addr);
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let got = read_until_closed(&mut socket).expect("the idle kept-alive connection stayed open");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"ok\""), "{text}");
}

#[test]
fn a_slow_body_is_answered_408_and_nothing_is_applied() {
    let s = server(ServerConfig {
        body_read_timeout: Duration::from_millis(500),
        ..ServerConfig::default()
    });
    let token = s.token("builder");
    s.create(&token, "ctx", seed_doc());
    let before = s.revision("ctx");
    let body = json!({"agent": "builder", "changes": [
        {"path": "project_state.current_phase", "to": "slow"}]})
    .to_string();
    let mut socket = connect(&s.addr);
    let head = format!(
        "POST /v1/contexts/ctx/push HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).unwrap();
    // All but the last byte, then silence.
    socket
        .write_all(&body.as_bytes()[..body.len() - 1])
        .unwrap();
    let got = read_until_closed(&mut socket).expect("a stalled body held the connection");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let json_start = text.find('{').unwrap();
    let answer: serde_json::Value = serde_json::from_str(&text[json_start..]).unwrap();
    assert_eq!(answer["error"], "request_timeout", "{answer}");
    assert_eq!(s.revision("ctx"), before);
    // The same body sent at once goes through: the limit is on time, not the request.
    let r = post_json(
        &s.url("/v1/contexts/ctx/push"),
        &token,
        &serde_json::from_str(&body).unwrap(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn an_event_stream_outlives_the_idle_and_header_timeouts() {
    let s = server(ServerConfig {
        header_read_timeout: Duration::from_millis(200),
        idle_timeout: Duration::from_millis(600),
        keep_alive: Duration::from_millis(150),
        ..ServerConfig::default()
    });
    let token = s.token("builder");
    s.create(&token, "ctx", seed_doc());
    let mut sse = Sse::connect(&s.addr, "/v1/contexts/ctx/events", &token, &[]);
    assert_eq!(sse.status, 200);
    // Five idle timeouts without an event: only keep-alive comments move.
    std::thread::sleep(Duration::from_secs(3));
    let r = post_json(
        &s.url("/v1/contexts/ctx/push"),
        &token,
        &json!({"agent": "builder", "changes": [
            {"path": "project_state.current_phase", "to": "later"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let event = sse
        .next(WAIT)
        .expect("the subscriber was cut before the push");
    assert_eq!(event.event, "revision");
    assert_eq!(event.revision(), s.revision("ctx"));
}

#[test]
fn a_connection_on_which_nothing_moves_is_closed_by_the_idle_timeout() {
    // Keep-alive comments slower than the idle timeout: an open stream with nothing
    // moving, as when a client stops reading.
    let s = server(ServerConfig {
        idle_timeout: Duration::from_millis(500),
        keep_alive: Duration::from_secs(3600),
        ..ServerConfig::default()
    });
    let token = s.token("builder");
    s.create(&token, "ctx", seed_doc());
    let mut socket = connect(&s.addr);
    let head = format!(
        "GET /v1/contexts/ctx/events HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).unwrap();
    let got = read_until_closed(&mut socket).expect("a stream with nothing moving stayed open");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[test]
fn at_the_cap_new_connections_wait_until_one_ends() {
    let s = server(ServerConfig {
        max_connections: 4,
        header_read_timeout: Duration::from_secs(3600),
        ..ServerConfig::default()
    });
    let mut held: Vec<TcpStream> = (0..4).map(|_| connect(&s.addr)).collect();
    // Let the server accept all four.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        healthz(&s.addr, Duration::from_millis(1000)),
        None,
        "a fifth connection was served with the cap at 4"
    );
    drop(held.pop());
    assert_eq!(healthz(&s.addr, WAIT), Some(200));
    assert!(held.iter().all(still_open));
}

#[test]
fn shutdown_is_not_held_up_by_idle_or_half_sent_connections() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("ctxsync.db"), StoreOptions::default()).unwrap(),
    );
    let config = ServerConfig {
        header_read_timeout: Duration::from_secs(3600),
        idle_timeout: Duration::from_secs(3600),
        ..ServerConfig::default()
    };
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let served = runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            ctxsync_server::serve(listener, AppState::new(store, config), async move {
                let _ = stop_rx.await;
            })
            .await
        });
        let _ = done_tx.send(served.is_ok());
    });
    let addr = addr_rx.recv_timeout(WAIT).unwrap().to_string();
    let idle: Vec<TcpStream> = (0..10).map(|_| connect(&addr)).collect();
    let mut half = connect(&addr);
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost:").unwrap();
    // A kept-alive connection that finished a request.
    let mut used = connect(&addr);
    used.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    used.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    stop.send(()).unwrap();
    assert_eq!(
        done_rx.recv_timeout(WAIT),
        Ok(true),
        "the server did not finish shutting down with idle connections open"
    );
    assert!(!idle.iter().any(still_open));
    assert!(!still_open(&half));
}
