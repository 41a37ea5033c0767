//! Minimal glob matching for `excludes`: `*` and `?` stay inside one path segment, `**`
//! crosses segments. A pattern without `/` is matched against every segment (like
//! `.gitignore`), so `*backup*` excludes a file or a folder at any depth.

/// A compiled exclude pattern.
#[derive(Debug, Clone)]
pub struct Glob {
    pattern: String,
    anchored: bool,
}

impl Glob {
    /// Compiles a pattern; patterns are plain strings, so this cannot fail.
    pub fn new(pattern: &str) -> Self {
        let p = pattern.trim().trim_start_matches("./");
        Glob {
            anchored: p.contains('/'),
            pattern: p.trim_end_matches('/').to_string(),
        }
    }

    /// True when the repository-relative path `rel` (with `/` separators) matches.
    pub fn matches(&self, rel: &str) -> bool {
        if self.anchored {
            match_path(self.pattern.as_bytes(), rel.as_bytes())
        } else {
            rel.split('/')
                .any(|seg| match_segment(self.pattern.as_bytes(), seg.as_bytes()))
        }
    }
}

/// A set of globs; matches when any does.
#[derive(Debug, Clone, Default)]
pub struct GlobSet(Vec<Glob>);

impl GlobSet {
    /// Compiles every pattern.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Self {
        GlobSet(patterns.iter().map(|p| Glob::new(p.as_ref())).collect())
    }
    /// True when any pattern matches `rel`.
    pub fn matches(&self, rel: &str) -> bool {
        self.0.iter().any(|g| g.matches(rel))
    }

    /// [`Self::matches`] for an entry `name` of a folder whose own path was already
    /// checked: an unanchored pattern then only needs the new last segment.
    pub fn matches_entry(&self, rel: &str, name: &str) -> bool {
        self.0.iter().any(|g| {
            if g.anchored {
                g.matches(rel)
            } else {
                match_segment(g.pattern.as_bytes(), name.as_bytes())
            }
        })
    }
}

fn match_segment(p: &[u8], s: &[u8]) -> bool {
    // Iterative wildcard match with single backtrack point: linear enough for names.
    let (mut pi, mut si) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(sp) = star {
            pi = sp + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

fn match_path(p: &[u8], s: &[u8]) -> bool {
    let pats: Vec<&[u8]> = p.split(|&b| b == b'/').collect();
    let segs: Vec<&[u8]> = s.split(|&b| b == b'/').collect();
    match_segs(&pats, &segs)
}

fn match_segs(p: &[&[u8]], s: &[&[u8]]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(&b"**") => (0..=s.len()).any(|i| match_segs(&p[1..], &s[i..])),
        Some(first) => !s.is_empty() && match_segment(first, s[0]) && match_segs(&p[1..], &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unanchored_matches_any_segment() {
        let g = GlobSet::new(&["*backup*", "*.tmp", "*.bak"]);
        assert!(g.matches("agents/core/x/x-monolithic-backup.md"));
        assert!(g.matches("agents/backups/a.md"));
        assert!(g.matches("a/b.tmp"));
        assert!(!g.matches("agents/core/x/x.md"));
        assert!(!g.matches("agents/tmp/x.md"));
    }

    #[test]
    fn anchored_and_double_star() {
        let g = Glob::new("agents/**/draft-*.md");
        assert!(g.matches("agents/draft-a.md"));
        assert!(g.matches("agents/x/y/draft-a.md"));
        assert!(!g.matches("other/draft-a.md"));
        assert!(Glob::new("agents/*.md").matches("agents/a.md"));
        assert!(!Glob::new("agents/*.md").matches("agents/x/a.md"));
    }
}
