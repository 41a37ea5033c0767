//! Validation of rendered files for their target, done for every output of a run before
//! anything is written: YAML that parses into a mapping, required keys, a safe name that
//! matches the file, GitHub's 30,000-character body limit, and no `@` reference left.

use crate::config::{AgentsConfig, Target};
use crate::parse::split_frontmatter;
use crate::paths;
use crate::refs::{self, RefKind};
use crate::render::Output;

/// GitHub's limit on the body of a custom agent file, in characters.
pub const MAX_AGENT_BODY_CHARS: usize = 30_000;

/// Returns the problems of `out` (empty when valid). Messages name the output path.
pub fn validate(cfg: &AgentsConfig, out: &Output) -> Vec<String> {
    let mut errs = Vec::new();
    let p = &out.path;
    let dir = cfg.target_dir(out.target);
    let file = match p.strip_prefix(dir).and_then(|r| r.strip_prefix('/')) {
        Some(f) if !f.contains('/') && paths::is_safe_rel(p) => f,
        _ => {
            errs.push(format!(
                "{p}: output path is outside the target folder {dir}"
            ));
            return errs;
        }
    };
    let Ok(text) = std::str::from_utf8(&out.bytes) else {
        errs.push(format!("{p}: output is not UTF-8"));
        return errs;
    };
    let Some((yaml, body)) = split_frontmatter(text) else {
        errs.push(format!("{p}: missing YAML frontmatter"));
        return errs;
    };
    let fm = match crate::yaml::parse(yaml) {
        Ok(v) => v,
        Err(e) => {
            errs.push(format!("{p}: frontmatter does not parse: {e}"));
            return errs;
        }
    };
    if !fm.is_mapping() {
        errs.push(format!("{p}: frontmatter is not a mapping"));
        return errs;
    }
    let required: &[&str] = match out.target {
        Target::VscodeAgent | Target::Claude => &["name", "description"],
        Target::VscodePrompt => &["name", "description", "agent"],
    };
    for k in required {
        match fm.get(*k).and_then(|v| v.as_str()) {
            Some(s) if !s.trim().is_empty() => {}
            _ => errs.push(format!("{p}: frontmatter key `{k}` is missing or empty")),
        }
    }
    if let Some(name) = fm.get("name").and_then(|v| v.as_str()) {
        let suffix = match out.target {
            Target::VscodeAgent => ".agent.md",
            Target::VscodePrompt => ".prompt.md",
            Target::Claude => ".md",
        };
        if !paths::is_safe_name(name) {
            errs.push(format!("{p}: name {name:?} is not a safe file name"));
        } else if file != format!("{name}{suffix}") {
            errs.push(format!("{p}: file name does not match name {name:?}"));
        }
    }
    if out.target == Target::Claude {
        if let Some(t) = fm.get("tools") {
            if !t.is_string() {
                errs.push(format!(
                    "{p}: Claude Code expects `tools` as a comma-separated string"
                ));
            }
        }
    }
    if out.target == Target::VscodeAgent {
        let n = body.chars().count();
        if n > MAX_AGENT_BODY_CHARS {
            errs.push(format!(
                "{p}: body is {n} characters, over GitHub's limit of {MAX_AGENT_BODY_CHARS} (use references = \"link\" or split the agent)"
            ));
        }
    }
    if let Some(r) = refs::scan(body).into_iter().find(|r| r.kind == RefKind::At) {
        errs.push(format!(
            "{p}:{}: unresolved reference {} left in the output",
            r.line,
            r.display()
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
