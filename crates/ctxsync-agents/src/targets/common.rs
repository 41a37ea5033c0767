//! Validation shared by the targets, done for every output of a run before anything is
//! written: a path inside the target's folder, YAML frontmatter that parses into a
//! mapping, required and known keys, a name that matches the file, GitHub's
//! 30,000-character body limit, and no `@` reference left.

use crate::config::AgentsConfig;
use crate::parse::split_frontmatter;
use crate::paths;
use crate::refs::{self, RefKind};
use crate::render::Output;

/// GitHub's limit on the body of a custom agent file, in characters.
pub const MAX_AGENT_BODY_CHARS: usize = 30_000;

/// Returns the problems of `out` for its target (empty when valid).
pub fn validate(cfg: &AgentsConfig, out: &Output) -> Vec<String> {
    super::host(out.target).validate(cfg, out)
}

/// The part of `out`'s path below `dir`, when it is a safe path inside it.
pub fn path_below<'a>(out: &'a Output, dir: &str) -> Result<&'a str, String> {
    let p = &out.path;
    match p.strip_prefix(dir).and_then(|r| r.strip_prefix('/')) {
        Some(f) if paths::is_safe_rel(p) && !f.is_empty() => Ok(f),
        _ => Err(format!(
            "{p}: output path is outside the target folder {dir}"
        )),
    }
}

/// The text of `out`, or the problem.
pub fn utf8(out: &Output) -> Result<&str, String> {
    std::str::from_utf8(&out.bytes).map_err(|_| format!("{}: output is not UTF-8", out.path))
}

/// Splits `text` into parsed frontmatter (a mapping) and body.
pub fn frontmatter<'t>(
    path: &str,
    text: &'t str,
) -> Result<(serde_norway::Value, &'t str), String> {
    let Some((yaml, body)) = split_frontmatter(text) else {
        return Err(format!("{path}: missing YAML frontmatter"));
    };
    let fm =
        crate::yaml::parse(yaml).map_err(|e| format!("{path}: frontmatter does not parse: {e}"))?;
    if !fm.is_mapping() {
        return Err(format!("{path}: frontmatter is not a mapping"));
    }
    Ok((fm, body))
}

/// Problems with required string keys of `fm`.
pub fn require_strings(
    path: &str,
    fm: &serde_norway::Value,
    keys: &[&str],
    errs: &mut Vec<String>,
) {
    for k in keys {
        match fm.get(*k).and_then(|v| v.as_str()) {
            Some(s) if !s.trim().is_empty() => {}
            _ => errs.push(format!("{path}: frontmatter key `{k}` is missing or empty")),
        }
    }
}

/// Problems with keys of `fm` the host does not know.
pub fn known_keys_only(
    path: &str,
    fm: &serde_norway::Value,
    known: &[&str],
    errs: &mut Vec<String>,
) {
    if let Some(map) = fm.as_mapping() {
        for k in map.keys() {
            let k = k.as_str().unwrap_or("");
            if !known.contains(&k) {
                errs.push(format!(
                    "{path}: frontmatter key `{k}` is not one the host knows"
                ));
            }
        }
    }
}

/// `name` in `fm` must be safe and give file name `file` with `suffix`.
pub fn name_matches_file(
    path: &str,
    fm: &serde_norway::Value,
    file: &str,
    suffix: &str,
    errs: &mut Vec<String>,
) {
    if let Some(name) = fm.get("name").and_then(|v| v.as_str()) {
        if !paths::is_safe_name(name) {
            errs.push(format!("{path}: name {name:?} is not a safe file name"));
        } else if file != format!("{name}{suffix}") {
            errs.push(format!("{path}: file name does not match name {name:?}"));
        }
    }
}

/// The body must fit GitHub's limit.
pub fn body_within_limit(path: &str, body: &str, errs: &mut Vec<String>) {
    let n = body.chars().count();
    if n > MAX_AGENT_BODY_CHARS {
        errs.push(format!(
            "{path}: body is {n} characters, over GitHub's limit of {MAX_AGENT_BODY_CHARS} (use references = \"link\" or split the agent)"
        ));
    }
}

/// No `@` reference may be left in what a host reads.
pub fn no_at_refs(path: &str, body: &str, errs: &mut Vec<String>) {
    if let Some(r) = refs::scan(body).into_iter().find(|r| r.kind == RefKind::At) {
        errs.push(format!(
            "{path}:{}: unresolved reference {} left in the output",
            r.line,
            r.display()
        ));
    }
}

/// The common checks of a Markdown agent file with frontmatter directly in `dir`
/// (or below it when `nested`): path, frontmatter, required keys, name, known keys, `@`.
pub fn markdown_agent(
    out: &Output,
    dir: &str,
    suffix: &str,
    required: &[&str],
    known: &[&str],
    nested: bool,
) -> (Vec<String>, Option<(serde_norway::Value, String)>) {
    let mut errs = Vec::new();
    let p = &out.path;
    let file = match path_below(out, dir) {
        Ok(f) if nested || !f.contains('/') => paths::file_name(f),
        Ok(_) => {
            errs.push(format!(
                "{p}: output path is outside the target folder {dir}"
            ));
            return (errs, None);
        }
        Err(e) => {
            errs.push(e);
            return (errs, None);
        }
    };
    let text = match utf8(out) {
        Ok(t) => t,
        Err(e) => {
            errs.push(e);
            return (errs, None);
        }
    };
    let (fm, body) = match frontmatter(p, text) {
        Ok(x) => x,
        Err(e) => {
            errs.push(e);
            return (errs, None);
        }
    };
    require_strings(p, &fm, required, &mut errs);
    name_matches_file(p, &fm, file, suffix, &mut errs);
    known_keys_only(p, &fm, known, &mut errs);
    no_at_refs(p, body, &mut errs);
    let body = body.to_string();
    (errs, Some((fm, body)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Target;

    fn out(target: Target, path: &str, s: &str) -> Output {
        Output {
            target,
            path: path.into(),
            bytes: s.as_bytes().to_vec(),
        }
    }

    #[test]
    fn accepts_valid_and_reports_each_problem() {
        let c = AgentsConfig::default();
        assert!(validate(
            &c,
            &out(
                Target::VscodeAgent,
                ".github/agents/a.agent.md",
                "---\nname: a\ndescription: d\n---\nbody\n"
            )
        )
        .is_empty());
        let e = validate(
            &c,
            &out(
                Target::VscodeAgent,
                ".github/agents/a.agent.md",
                "---\nname: b\n---\nsee @modules/x.md\n",
            ),
        );
        assert_eq!(e.len(), 3, "{e:?}");
        let e = validate(
            &c,
            &out(
                Target::VscodePrompt,
                ".github/prompts/../x.prompt.md",
                "---\n---\n",
            ),
        );
        assert!(e[0].contains("outside"));
        let big = format!("---\nname: a\ndescription: d\n---\n{}", "x".repeat(30_001));
        assert_eq!(
            validate(
                &c,
                &out(Target::VscodeAgent, ".github/agents/a.agent.md", &big)
            )
            .len(),
            1
        );
        let e = validate(
            &c,
            &out(
                Target::VscodeAgent,
                ".github/agents/a.agent.md",
                "---\nname: [a\n---\n",
            ),
        );
        assert!(e[0].contains("does not parse"));
        let e = validate(
            &c,
            &out(
                Target::VscodeAgent,
                ".github/agents/a.agent.md",
                "---\nname: a\ndescription: d\ncolour: red\n---\nbody\n",
            ),
        );
        assert!(e[0].contains("`colour`"), "{e:?}");
    }
}
