//! Line-based three-way merge (diff3): used by `sync --merge` to combine a hand-edited
//! output (theirs) with a freshly rendered one (ours) against what was last written (base).

/// Merges; `Err(n)` when `n` regions changed on both sides differently.
pub fn merge(base: &str, ours: &str, theirs: &str) -> Result<String, usize> {
    let b: Vec<&str> = base.split_inclusive('\n').collect();
    let o: Vec<&str> = ours.split_inclusive('\n').collect();
    let t: Vec<&str> = theirs.split_inclusive('\n').collect();
    // The quadratic LCS is fine for agent files; refuse pathological sizes instead.
    if b.len().saturating_mul(o.len().max(t.len())) > 16_000_000 {
        return Err(1);
    }
    let mo = lcs_map(&b, &o);
    let mt = lcs_map(&b, &t);
    let (mut i, mut j, mut k) = (0, 0, 0);
    let mut out = String::with_capacity(ours.len().max(theirs.len()));
    let mut conflicts = 0;
    loop {
        // Next base line matched in both, at or after the cursors: a stable anchor.
        let next = (i..b.len())
            .find(|&x| matches!((mo[x], mt[x]), (Some(y), Some(z)) if y >= j && z >= k));
        let (bi, oj, tk) = match next {
            Some(x) => (x, mo[x].unwrap_or(o.len()), mt[x].unwrap_or(t.len())),
            None => (b.len(), o.len(), t.len()),
        };
        let (bc, oc, tc) = (&b[i..bi], &o[j..oj], &t[k..tk]);
        if oc == bc {
            out.extend(tc.iter().copied());
        } else if tc == bc || oc == tc {
            out.extend(oc.iter().copied());
        } else {
            conflicts += 1;
        }
        if next.is_none() {
            break;
        }
        out.push_str(b[bi]);
        i = bi + 1;
        j = oj + 1;
        k = tk + 1;
    }
    if conflicts > 0 {
        Err(conflicts)
    } else {
        Ok(out)
    }
}

/// For each line of `a`, the index of its partner in `b` in one longest common subsequence.
fn lcs_map(a: &[&str], b: &[&str]) -> Vec<Option<usize>> {
    let (n, m) = (a.len(), b.len());
    let w = m + 1;
    let mut dp = vec![0u32; (n + 1) * w];
    for x in (0..n).rev() {
        for y in (0..m).rev() {
            dp[x * w + y] = if a[x] == b[y] {
                dp[(x + 1) * w + y + 1] + 1
            } else {
                dp[(x + 1) * w + y].max(dp[x * w + y + 1])
            };
        }
    }
    let mut map = vec![None; n];
    let (mut x, mut y) = (0, 0);
    while x < n && y < m {
        if a[x] == b[y] {
            map[x] = Some(y);
            x += 1;
            y += 1;
        } else if dp[(x + 1) * w + y] >= dp[x * w + y + 1] {
            x += 1;
        } else {
            y += 1;
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_overlapping_edits_merge() {
        let base = "a\nb\nc\nd\ne\n";
        let ours = "a\nB\nc\nd\ne\n";
        let theirs = "a\nb\nc\nd\nE\nf\n";
        assert_eq!(merge(base, ours, theirs).unwrap(), "a\nB\nc\nd\nE\nf\n");
    }

    #[test]
    fn same_line_edited_both_sides_conflicts() {
        assert_eq!(merge("a\nb\nc\n", "a\nX\nc\n", "a\nY\nc\n"), Err(1));
        assert_eq!(
            merge("a\nb\nc\n", "a\nX\nc\n", "a\nX\nc\n").unwrap(),
            "a\nX\nc\n"
        );
    }
}
