//! Sync levels (seed §Synchronization Levels) and the periodic batching policy.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::change::{Change, Op};

/// How urgent a sync is.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Pushed at once and fanned out to every subscriber first.
    Critical,
    /// After a task or milestone.
    #[default]
    Checkpoint,
    /// Batched until time, task count or size says so.
    Periodic,
    /// Start and end of a work session.
    Session,
}

impl Level {
    pub const ALL: [Level; 4] = [
        Level::Critical,
        Level::Checkpoint,
        Level::Periodic,
        Level::Session,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Critical => "critical",
            Level::Checkpoint => "checkpoint",
            Level::Periodic => "periodic",
            Level::Session => "session",
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "critical" => Ok(Level::Critical),
            "checkpoint" => Ok(Level::Checkpoint),
            "periodic" => Ok(Level::Periodic),
            "session" => Ok(Level::Session),
            other => Err(format!(
                "unknown level {other:?} (expected critical, checkpoint, periodic or session)"
            )),
        }
    }
}

/// When a periodic sync stops batching and flushes (seed: every 30 minutes or 5 tasks,
/// or past a size threshold).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeriodicPolicy {
    pub interval_secs: u64,
    pub tasks: u64,
    pub size_bytes: u64,
}

impl Default for PeriodicPolicy {
    fn default() -> Self {
        Self {
            interval_secs: 30 * 60,
            tasks: 5,
            size_bytes: 16 * 1024,
        }
    }
}

/// Why a periodic sync flushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlushReason {
    Interval,
    TaskCount,
    Size,
}

impl PeriodicPolicy {
    /// Whether pending changes should be pushed now. `last_flush_unix` is `None` before the
    /// first periodic flush of this agent, which counts as due: nothing waits forever.
    pub fn due(
        &self,
        last_flush_unix: Option<u64>,
        now_unix: u64,
        pending: &[Change],
    ) -> Option<FlushReason> {
        let Some(last) = last_flush_unix else {
            return Some(FlushReason::Interval);
        };
        if now_unix.saturating_sub(last) >= self.interval_secs {
            return Some(FlushReason::Interval);
        }
        if completed_tasks(pending) >= self.tasks {
            return Some(FlushReason::TaskCount);
        }
        let size: u64 = pending
            .iter()
            .map(|c| serde_json::to_vec(&c.to_json()).map_or(0, |v| v.len() as u64))
            .sum();
        (size >= self.size_bytes).then_some(FlushReason::Size)
    }
}

/// How many tasks `changes` complete: elements added to a `completed_tasks` list, and
/// `status` fields set to completed/done/success.
pub fn completed_tasks(changes: &[Change]) -> u64 {
    changes
        .iter()
        .filter(|c| {
            let path = c.path.to_string();
            let value = match &c.op {
                Op::Set(v) | Op::Add(v) | Op::Replace(v) => v,
                _ => return false,
            };
            let adds_completed = path.contains("completed_tasks") && value.is_object();
            let completes = path.ends_with("status")
                && matches!(value, Value::String(s) if matches!(s.as_str(), "completed" | "done" | "success"));
            adds_completed || completes
        })
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn periodic_is_due_by_time_tasks_or_size() {
        let p = PeriodicPolicy::default();
        let one = Change::list_from_json(&json!([{"path": "a", "to": 1}])).unwrap();
        assert_eq!(p.due(None, 100, &one), Some(FlushReason::Interval));
        assert_eq!(p.due(Some(100), 200, &one), None);
        assert_eq!(
            p.due(Some(100), 100 + 1800, &one),
            Some(FlushReason::Interval)
        );
        let tasks: Vec<Change> = (0..5)
            .map(|i| {
                Change::from_json(
                    0,
                    &json!({"path": format!("t[id={i}].status"), "to": "completed"}),
                )
                .unwrap()
            })
            .collect();
        assert_eq!(p.due(Some(100), 200, &tasks), Some(FlushReason::TaskCount));
        let big =
            Change::list_from_json(&json!([{"path": "a", "to": "x".repeat(20_000)}])).unwrap();
        assert_eq!(p.due(Some(100), 200, &big), Some(FlushReason::Size));
    }
}
