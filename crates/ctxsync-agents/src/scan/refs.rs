//! Reference and heading scanning in Markdown text.
//!
//! Two kinds of references are recognised outside fenced code blocks and inline code:
//! OpenAgentBuilder `@modules/…`, `@tasks/…`, `@checklists/…` (optional `#anchor`),
//! resolved against the agent's root folder, and relative Markdown links `[t](path#a)`,
//! resolved against the containing file's folder. Headings give GitHub-style slugs for
//! anchor checks.

/// The prefixes that make an `@` word a reference.
pub const AT_PREFIXES: [&str; 3] = ["modules/", "tasks/", "checklists/"];

/// What kind of reference was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefKind {
    /// `@modules/x.md#a`: relative to the agent root.
    At,
    /// `[text](x.md#a)`: relative to the file's folder.
    Link,
}

/// One reference occurrence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRef {
    /// The kind of reference.
    pub kind: RefKind,
    /// 1-based line number in the scanned text.
    pub line: usize,
    /// Byte range to replace when rewriting: the whole `@…` word, or the link URL only.
    pub start: usize,
    /// End of the byte range (exclusive).
    pub end: usize,
    /// The path part, as written.
    pub path: String,
    /// The anchor, without `#`.
    pub anchor: Option<String>,
}

impl RawRef {
    /// The reference as written in the source.
    pub fn display(&self) -> String {
        let pre = if self.kind == RefKind::At { "@" } else { "" };
        match &self.anchor {
            Some(a) => format!("{pre}{}#{a}", self.path),
            None => format!("{pre}{}", self.path),
        }
    }
}

/// Tracks fenced code blocks line by line.
#[derive(Default)]
pub struct FenceState {
    open: Option<(u8, usize)>,
}

impl FenceState {
    /// Feeds one line; returns true when the line is part of a fence (markers included).
    pub fn in_code(&mut self, line: &str) -> bool {
        let t = line.trim_start();
        let indent = line.len() - t.len();
        let marker = t.as_bytes().first().copied();
        let run = |c: u8| t.bytes().take_while(|&b| b == c).count();
        match self.open {
            Some((c, n)) => {
                if indent < 4 && marker == Some(c) && run(c) >= n && t[run(c)..].trim().is_empty() {
                    self.open = None;
                }
                true
            }
            None => {
                if indent < 4 {
                    for c in [b'`', b'~'] {
                        if marker == Some(c) && run(c) >= 3 {
                            self.open = Some((c, run(c)));
                            return true;
                        }
                    }
                }
                false
            }
        }
    }
}

fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/')
}

fn is_anchor_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-')
}

/// Finds every reference in `text`, in order.
pub fn scan(text: &str) -> Vec<RawRef> {
    let mut out = Vec::new();
    let mut fence = FenceState::default();
    let mut offset = 0;
    for (idx, line) in text.split_inclusive('\n').enumerate() {
        if !fence.in_code(line) {
            scan_line(line, offset, idx + 1, &mut out);
        }
        offset += line.len();
    }
    out
}

fn scan_line(line: &str, base: usize, lineno: usize, out: &mut Vec<RawRef>) {
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'`' => {
                // Skip an inline code span: a run of n backticks up to the next run of n.
                let n = b[i..].iter().take_while(|&&c| c == b'`').count();
                let mut j = i + n;
                let mut closed = None;
                while j < b.len() {
                    if b[j] == b'`' {
                        let m = b[j..].iter().take_while(|&&c| c == b'`').count();
                        if m == n {
                            closed = Some(j + m);
                            break;
                        }
                        j += m;
                    } else {
                        j += 1;
                    }
                }
                i = closed.unwrap_or(i + n);
            }
            b'@' => {
                let prev_ok =
                    i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b"._/-@".contains(&b[i - 1]));
                let rest = &line[i + 1..];
                if prev_ok && AT_PREFIXES.iter().any(|p| rest.starts_with(p)) {
                    let mut j = i + 1;
                    while j < b.len() && is_path_byte(b[j]) {
                        j += 1;
                    }
                    // A sentence may end right after the reference.
                    while j > i + 1 && b[j - 1] == b'.' {
                        j -= 1;
                    }
                    let path = line[i + 1..j].to_string();
                    let mut end = j;
                    let mut anchor = None;
                    if j < b.len() && b[j] == b'#' {
                        let mut k = j + 1;
                        while k < b.len() && is_anchor_byte(b[k]) {
                            k += 1;
                        }
                        if k > j + 1 {
                            anchor = Some(line[j + 1..k].to_string());
                            end = k;
                        }
                    }
                    out.push(RawRef {
                        kind: RefKind::At,
                        line: lineno,
                        start: base + i,
                        end: base + end,
                        path,
                        anchor,
                    });
                    i = end;
                } else {
                    i += 1;
                }
            }
            b']' if b.get(i + 1) == Some(&b'(') => {
                let start = i + 2;
                let Some(close) = line[start..].find(')').map(|k| start + k) else {
                    i += 1;
                    continue;
                };
                let inner = &line[start..close];
                // The URL ends at the first space (a title may follow).
                let url_len = inner.find(char::is_whitespace).unwrap_or(inner.len());
                let url = &inner[..url_len];
                if let Some(r) = link_ref(url, base + start, lineno) {
                    out.push(r);
                }
                i = close + 1;
            }
            _ => i += 1,
        }
    }
}

fn link_ref(url: &str, start: usize, line: usize) -> Option<RawRef> {
    let lower = url.to_ascii_lowercase();
    if url.is_empty()
        || url.starts_with('#')
        || url.starts_with('/')
        || url.starts_with('<')
        || lower.contains("://")
        || lower.starts_with("mailto:")
        || lower.starts_with("data:")
        || lower.starts_with("vscode:")
    {
        return None;
    }
    let (path, anchor) = match url.split_once('#') {
        Some((p, a)) => (p, Some(a.to_string())),
        None => (url, None),
    };
    if path.is_empty() {
        return None;
    }
    Some(RawRef {
        kind: RefKind::Link,
        line,
        start,
        end: start + url.len(),
        path: path.replace("%20", " "),
        anchor: anchor.filter(|a| !a.is_empty()),
    })
}

/// One ATX heading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heading {
    /// 1..=6.
    pub level: usize,
    /// Text as written.
    pub text: String,
    /// GitHub-style anchor, made unique within the file.
    pub slug: String,
    /// 1-based line.
    pub line: usize,
}

/// Lists the ATX headings of `text` outside code blocks, with unique GitHub slugs.
pub fn headings(text: &str) -> Vec<Heading> {
    let mut out: Vec<Heading> = Vec::new();
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut fence = FenceState::default();
    for (idx, line) in text.lines().enumerate() {
        if fence.in_code(line) {
            continue;
        }
        let Some((level, t)) = atx_heading(line) else {
            continue;
        };
        let base = slugify(t);
        let n = seen.entry(base.clone()).or_insert(0);
        let slug = if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        *n += 1;
        out.push(Heading {
            level,
            text: t.to_string(),
            slug,
            line: idx + 1,
        });
    }
    out
}

/// Parses an ATX heading line into its level and text.
pub fn atx_heading(line: &str) -> Option<(usize, &str)> {
    let t = line.trim_start();
    if line.len() - t.len() > 3 {
        return None;
    }
    let level = t.bytes().take_while(|&b| b == b'#').count();
    if level == 0 || level > 6 {
        return None;
    }
    let rest = &t[level..];
    if !(rest.is_empty() || rest.starts_with(' ') || rest.starts_with('\t')) {
        return None;
    }
    let rest = rest.trim();
    // A closing sequence of #s is not part of the text.
    let rest = rest.trim_end_matches('#').trim_end();
    Some((level, rest))
}

/// GitHub's heading anchor: lower-case, punctuation dropped (except `-` and `_`),
/// spaces become `-`. Link syntax inside the heading keeps only its text.
pub fn slugify(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ']' && chars.peek() == Some(&'(') {
            // Drop the URL of an inline link.
            for d in chars.by_ref() {
                if d == ')' {
                    break;
                }
            }
            continue;
        }
        plain.push(c);
    }
    let mut s = String::with_capacity(plain.len());
    for c in plain.trim().chars() {
        if c.is_alphanumeric() || c == '_' || c == '-' {
            s.extend(c.to_lowercase());
        } else if c == ' ' {
            s.push('-');
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_at_refs_with_anchor_and_lines() {
        let t = "# A\n- x: @modules/m/a.md#quality-metrics\nsee @tasks/t.md.\n";
        let r = scan(t);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].path, "modules/m/a.md");
        assert_eq!(r[0].anchor.as_deref(), Some("quality-metrics"));
        assert_eq!(r[0].line, 2);
        assert_eq!(&t[r[0].start..r[0].end], "@modules/m/a.md#quality-metrics");
        assert_eq!(r[1].path, "tasks/t.md");
        assert_eq!(r[1].line, 3);
    }

    #[test]
    fn skips_code_emails_and_other_at_words() {
        let t = "```\n@modules/x.md\n```\n`@modules/y.md` a@modules/z.md @module/q.md @agent\n";
        assert!(scan(t).is_empty());
    }

    #[test]
    fn finds_relative_links_only() {
        let t = "[a](modules/a.md#x) [b](https://e.com/a.md) [c](#local) [d](../d.md \"t\")\n";
        let r = scan(t);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].kind, RefKind::Link);
        assert_eq!(&t[r[0].start..r[0].end], "modules/a.md#x");
        assert_eq!(r[1].path, "../d.md");
    }

    #[test]
    fn github_slugs() {
        assert_eq!(slugify("Quality Metrics"), "quality-metrics");
        assert_eq!(slugify("1. OBSERVE - Phase"), "1-observe---phase");
        assert_eq!(
            slugify("Communication & Coordination"),
            "communication--coordination"
        );
        assert_eq!(slugify("**Bold** [link](x.md)"), "bold-link");
        let h = headings("# A\n## A\n```\n# not\n```\n### B ###\n");
        let slugs: Vec<_> = h.iter().map(|h| h.slug.as_str()).collect();
        assert_eq!(slugs, ["a", "a-1", "b"]);
    }
}
