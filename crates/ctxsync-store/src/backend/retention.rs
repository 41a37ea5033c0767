//! The compaction bound both backends share (DESIGN §15): the oldest revision a
//! retention keeps. A backend supplies only the one fact it must read, the newest
//! revision written before an age cutoff.

use crate::types::*;

/// The oldest revision `retain` keeps at `head`, or `None` when it keeps everything.
/// `newest_before(cutoff_ms)` is the newest revision written before `cutoff_ms` (`None`
/// when there is none); it is asked only when an age limit is set. An entry goes only
/// when every set limit lets it go: the older of the two bounds wins.
pub fn oldest_kept<E>(
    head: &Head,
    retain: &Retention,
    now_ms: u64,
    newest_before: impl FnOnce(u64) -> Result<Option<u64>, E>,
) -> Result<Option<u64>, E> {
    if !retain.is_set() {
        return Ok(None);
    }
    let by_count = retain.revisions.map(|n| head.revision.saturating_sub(n));
    let by_age = match retain.max_age_ms {
        None => None,
        Some(age) => Some(newest_before(now_ms.saturating_sub(age))?.unwrap_or(head.horizon)),
    };
    Ok(match (by_count, by_age) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(revision: u64, horizon: u64) -> Head {
        Head {
            context: "c".into(),
            revision,
            checksum: String::new(),
            size: 0,
            horizon,
        }
    }

    fn keep(revisions: Option<u64>, max_age_ms: Option<u64>) -> Retention {
        Retention {
            revisions,
            max_age_ms,
        }
    }

    #[test]
    fn the_limit_that_keeps_more_wins() {
        let none = |_| Ok::<_, ()>(None);
        assert_eq!(
            oldest_kept(&head(100, 0), &keep(None, None), 0, none),
            Ok(None)
        );
        assert_eq!(
            oldest_kept(&head(100, 0), &keep(Some(10), None), 0, none),
            Ok(Some(90))
        );
        assert_eq!(
            oldest_kept(&head(5, 0), &keep(Some(10), None), 0, none),
            Ok(Some(0))
        );
        // Nothing older than the cutoff: age keeps everything from the horizon on.
        assert_eq!(
            oldest_kept(&head(100, 7), &keep(Some(10), Some(1)), 50, none),
            Ok(Some(7))
        );
        let old = |cutoff| Ok::<_, ()>((cutoff == 40).then_some(60));
        assert_eq!(
            oldest_kept(&head(100, 0), &keep(Some(10), Some(10)), 50, old),
            Ok(Some(60))
        );
        assert_eq!(
            oldest_kept(&head(100, 0), &keep(Some(50), Some(10)), 50, old),
            Ok(Some(50))
        );
    }
}
