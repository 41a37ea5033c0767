//! Timing of a run's phases (debug log), clocks and the racy-timestamp margin.

use super::*;

/// Wall time of each phase of a run, logged at debug level (`CTXSYNC_LOG=ctxsync_agents=debug`)
/// so a slow run can be explained without a profiler.
/// With it, the resident memory at the end of each phase (where the peak comes from).
pub(super) struct Phases {
    pub(super) last: Instant,
    /// Phase, milliseconds, resident MB at its end (Linux).
    pub(super) done: Vec<(&'static str, f64, Option<f64>)>,
    pub(super) enabled: bool,
}

impl Phases {
    pub(super) fn new() -> Self {
        Phases {
            last: Instant::now(),
            done: Vec::new(),
            enabled: tracing::enabled!(tracing::Level::DEBUG),
        }
    }

    pub(super) fn mark(&mut self, phase: &'static str) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        self.done.push((
            phase,
            (now - self.last).as_secs_f64() * 1000.0,
            resident_mb(),
        ));
        self.last = now;
    }
}

/// The process's resident memory in MB, from `/proc/self/statm` (4 KiB pages).
pub(super) fn resident_mb() -> Option<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096.0 / 1e6)
}

impl Drop for Phases {
    fn drop(&mut self) {
        if self.done.is_empty() {
            return;
        }
        let summary: Vec<String> = self
            .done
            .iter()
            .map(|(p, ms, rss)| match rss {
                Some(mb) => format!("{p} {ms:.1}ms ({mb:.0}MB)"),
                None => format!("{p} {ms:.1}ms"),
            })
            .collect();
        tracing::debug!("agents sync phases: {}", summary.join(", "));
    }
}

/// Progress callback: `(done, total)`.
pub type Progress<'a> = &'a (dyn Fn(usize, usize) + Sync);

pub(super) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

pub(super) fn mtime_ns(m: &std::fs::Metadata) -> u64 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A file modified this close to the previous scan may have changed within the same
/// timestamp tick, so it is hashed again even when size and mtime match.
pub(crate) const RACY_MARGIN_NS: u64 = 50_000_000;
