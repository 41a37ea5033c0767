//! The sync-log buckets both backends answer ([`crate::Store::sync_buckets`]): checking a
//! span, and placing a row in it.

use crate::error::StoreError;
use crate::types::*;

/// Checks a span and turns it into SQL integers (from, bucket, to).
pub fn span_bounds(span: &BucketSpan) -> Result<(i64, i64, i64), StoreError> {
    if span.bucket_ms == 0 {
        return Err(StoreError::Invalid("bucket_ms must be at least 1".into()));
    }
    if span.buckets == 0 || span.buckets > MAX_SYNC_BUCKETS {
        return Err(StoreError::Invalid(format!(
            "buckets must be between 1 and {MAX_SYNC_BUCKETS}, not {}",
            span.buckets
        )));
    }
    let too_big = || StoreError::Invalid("the bucket span is past the year 292 million".into());
    let from = i64::try_from(span.from_ms).map_err(|_| too_big())?;
    let bucket = i64::try_from(span.bucket_ms).map_err(|_| too_big())?;
    let to = span
        .bucket_ms
        .checked_mul(u64::from(span.buckets))
        .and_then(|len| span.from_ms.checked_add(len))
        .and_then(|to| i64::try_from(to).ok())
        .ok_or_else(too_big)?;
    Ok((from, bucket, to))
}

/// Bucket index of a row, clamped into the span (rows are selected inside it anyway).
pub fn bucket_index(raw: i64, buckets: u32) -> Option<usize> {
    u32::try_from(raw)
        .ok()
        .filter(|i| *i < buckets)
        .map(|i| i as usize)
}
