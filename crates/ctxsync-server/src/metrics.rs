//! Server-side counters and their Prometheus text form (`GET /metrics`), plus the two
//! middlewares that feed them: responses by status class, and the real byte counts
//! before and after compression (which also give the `compression_ratio` of
//! `GET /v1/contexts/{ctx}/metrics`).

use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use ctxsync_core::PushResponse;
use ctxsync_store::Head;
use http_body::{Frame, SizeHint};

use crate::AppState;

/// Upper bounds (seconds) of the push latency histogram.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// How a push ended, for `ctxsync_pushes_total{outcome=...}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    Applied,
    Noop,
    Conflict,
    Rejected,
    Replayed,
    Refused,
}

impl PushOutcome {
    const ALL: [PushOutcome; 6] = [
        Self::Applied,
        Self::Noop,
        Self::Conflict,
        Self::Rejected,
        Self::Replayed,
        Self::Refused,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Noop => "noop",
            Self::Conflict => "conflict",
            Self::Rejected => "rejected",
            Self::Replayed => "replayed",
            Self::Refused => "refused",
        }
    }

    pub fn of(response: &PushResponse) -> Self {
        if response.replayed {
            Self::Replayed
        } else if !response.applied.is_empty() {
            Self::Applied
        } else if !response.conflicts.is_empty() {
            Self::Conflict
        } else if !response.rejected.is_empty() {
            Self::Rejected
        } else {
            Self::Noop
        }
    }
}

/// Every counter the server keeps. Cheap atomics; rendered on demand.
#[derive(Debug, Default)]
pub struct Metrics {
    pushes: [AtomicU64; 6],
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    pub(crate) sse_subscribers: AtomicI64,
    responses: [AtomicU64; 5],
    compressed_in: AtomicU64,
    compressed_out: AtomicU64,
}

impl Metrics {
    pub fn record_push(&self, outcome: PushOutcome, elapsed: Duration) {
        let i = PushOutcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(0);
        self.pushes[i].fetch_add(1, Ordering::Relaxed);
        // One bucket per sample; `render` makes them cumulative.
        let secs = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|bound| secs <= *bound) {
            self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    fn record_status(&self, status: u16) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes after compression over bytes before, over every response compressed so far.
    pub fn compression_ratio(&self) -> Option<f64> {
        let before = self.compressed_in.load(Ordering::Relaxed);
        let after = self.compressed_out.load(Ordering::Relaxed);
        (before > 0).then(|| after as f64 / before as f64)
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self, contexts: &[Head]) -> String {
        let mut out = String::with_capacity(2048);
        let _ = writeln!(
            out,
            "# HELP ctxsync_context_revision Current revision of each context.\n# TYPE ctxsync_context_revision gauge"
        );
        for head in contexts {
            let _ = writeln!(
                out,
                "ctxsync_context_revision{{context=\"{}\"}} {}",
                head.context, head.revision
            );
        }
        let _ = writeln!(
            out,
            "# HELP ctxsync_context_size_bytes Canonical JSON size of each context.\n# TYPE ctxsync_context_size_bytes gauge"
        );
        for head in contexts {
            let _ = writeln!(
                out,
                "ctxsync_context_size_bytes{{context=\"{}\"}} {}",
                head.context, head.size
            );
        }
        let _ = writeln!(
            out,
            "# HELP ctxsync_pushes_total Pushes answered, by outcome.\n# TYPE ctxsync_pushes_total counter"
        );
        for (outcome, count) in PushOutcome::ALL.iter().zip(&self.pushes) {
            let _ = writeln!(
                out,
                "ctxsync_pushes_total{{outcome=\"{}\"}} {}",
                outcome.as_str(),
                count.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP ctxsync_push_duration_seconds Time to decide and durably commit a push.\n# TYPE ctxsync_push_duration_seconds histogram"
        );
        let mut cumulative = 0;
        for (bound, count) in BUCKETS.iter().zip(&self.latency_buckets) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "ctxsync_push_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let total = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "ctxsync_push_duration_seconds_bucket{{le=\"+Inf\"}} {total}\nctxsync_push_duration_seconds_sum {}\nctxsync_push_duration_seconds_count {total}",
            self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "# HELP ctxsync_sse_subscribers Open event streams.\n# TYPE ctxsync_sse_subscribers gauge\nctxsync_sse_subscribers {}",
            self.sse_subscribers.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP ctxsync_http_responses_total HTTP responses, by status class.\n# TYPE ctxsync_http_responses_total counter"
        );
        for (i, count) in self.responses.iter().enumerate() {
            let _ = writeln!(
                out,
                "ctxsync_http_responses_total{{class=\"{}xx\"}} {}",
                i + 1,
                count.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP ctxsync_compression_bytes_in_total Bytes of responses before compression.\n# TYPE ctxsync_compression_bytes_in_total counter\nctxsync_compression_bytes_in_total {}",
            self.compressed_in.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP ctxsync_compression_bytes_out_total Bytes of the same responses after compression.\n# TYPE ctxsync_compression_bytes_out_total counter\nctxsync_compression_bytes_out_total {}",
            self.compressed_out.load(Ordering::Relaxed)
        );
        out
    }
}

/// The byte counts of one response, shared by the layers around the compressor.
#[derive(Debug, Default)]
struct Tally {
    raw: AtomicU64,
}

fn asks_compression(request: &Request) -> bool {
    request
        .headers()
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("gzip") || v.contains("zstd"))
}

fn is_event_stream(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// The outer counting layer: counts every response by status class and, outside the
/// compressor, hands a tally to the inner layer; when the response did get compressed it
/// counts the compressed bytes and adds both totals when the body ends.
pub(crate) async fn count_outer(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    if !asks_compression(&request) {
        let response = next.run(request).await;
        state.metrics().record_status(response.status().as_u16());
        return response;
    }
    let tally = Arc::new(Tally::default());
    request.extensions_mut().insert(Arc::clone(&tally));
    let response = next.run(request).await;
    state.metrics().record_status(response.status().as_u16());
    if !response.headers().contains_key(header::CONTENT_ENCODING) || is_event_stream(&response) {
        return response;
    }
    let metrics = state.clone();
    response.map(move |body| {
        Body::new(Counting {
            inner: body,
            bytes: 0,
            on_end: Some(Box::new(move |out| {
                let m = metrics.metrics();
                m.compressed_in
                    .fetch_add(tally.raw.load(Ordering::Relaxed), Ordering::Relaxed);
                m.compressed_out.fetch_add(out, Ordering::Relaxed);
            })),
        })
    })
}

/// Inside the compressor: counts the bytes the handler produced.
pub(crate) async fn count_raw(request: Request, next: Next) -> Response {
    let tally = request.extensions().get::<Arc<Tally>>().cloned();
    let response = next.run(request).await;
    match tally {
        Some(tally) if !is_event_stream(&response) => response.map(move |body| {
            Body::new(Counting {
                inner: body,
                bytes: 0,
                on_end: Some(Box::new(move |n| {
                    tally.raw.store(n, Ordering::Relaxed);
                })),
            })
        }),
        _ => response,
    }
}

type OnEnd = Box<dyn FnOnce(u64) + Send>;

/// A body that counts the data bytes passing through and reports the total once, when
/// the body ends (or is dropped).
struct Counting {
    inner: Body,
    bytes: u64,
    on_end: Option<OnEnd>,
}

impl Counting {
    fn finish(&mut self) {
        if let Some(f) = self.on_end.take() {
            f(self.bytes);
        }
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        self.finish();
    }
}

impl http_body::Body for Counting {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) => self.finish(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
