//! Rendering one agent into its target files.
//!
//! VS Code does not read `@modules/...`, so every reference becomes a relative Markdown
//! link that works from the output's folder, or (with `references = "inline"`) a link to
//! an appendix where each referenced file is inlined once, transitively. Relative links
//! in the source are rewritten so they still point at the same file from the output.
//! An inlined body that would pass GitHub's limit links its largest files instead.
//! The targets ([`crate::targets`]) wrap these bodies in each host's format.

pub mod synth;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use crate::config::{AgentsConfig, RefMode, Target};
use crate::graph::{resolve, RenameMap, Texts};
use crate::parse::{split_frontmatter, strip_bom, AgentMeta};
use crate::paths;
use crate::refs::{self, atx_heading, FenceState, RefKind};
use crate::targets::{self, RenderCtx, RenderSink};

/// One rendered file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The target.
    pub target: Target,
    /// Repository-relative path.
    pub path: String,
    /// Exact bytes to deploy.
    pub bytes: Vec<u8>,
}

/// An agent ready to render.
#[derive(Debug, Clone)]
pub struct AgentModel {
    /// Metadata.
    pub meta: AgentMeta,
    /// Entry file.
    pub entry: String,
    /// Body of the entry file (after frontmatter).
    pub body: String,
    /// The source already lives in the Claude Code folder (no Claude output for it).
    pub claude_source: bool,
}

/// The outputs of one agent and the files its bytes depend on.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Outputs for every enabled target.
    pub outputs: Vec<Output>,
    /// Library files read or looked for (missing ones included): a change to any of them
    /// may change the outputs.
    pub deps: BTreeSet<String>,
    /// What the targets dropped, mapped or linked instead of inlining.
    pub notes: Vec<String>,
}

/// Renders every enabled target of `agent`.
pub fn render(
    cfg: &AgentsConfig,
    texts: &Texts<'_>,
    renames: &RenameMap,
    agent: &AgentModel,
) -> Result<Rendered, String> {
    let ctx = RenderCtx {
        cfg,
        texts,
        renames,
    };
    let mut sink = RenderSink::default();
    sink.deps.insert(agent.entry.clone());
    let mut outputs = Vec::new();
    for &t in &cfg.targets {
        let host = targets::host(t);
        if host
            .output_path(cfg, &agent.meta.name, &agent.entry)
            .is_none()
        {
            continue;
        }
        outputs.extend(host.render(&ctx, agent, &mut sink)?);
    }
    // Rendered bytes are held until they are written: built by `format!` and pushes,
    // their buffers are up to twice their length (tens of MB on a large library).
    for o in &mut outputs {
        o.bytes.shrink_to_fit();
    }
    let mut notes = sink.notes;
    notes.sort();
    notes.dedup();
    Ok(Rendered {
        outputs,
        deps: sink.deps,
        notes,
    })
}

/// The body of `agent` for an output in folder `out_dir`, references turned into
/// relative links or (inline mode) inlined appendices. An inlined body that would pass
/// GitHub's limit links its largest files instead, noted in `sink`.
pub fn body(
    ctx: &RenderCtx<'_>,
    agent: &AgentModel,
    out_dir: &str,
    sink: &mut RenderSink,
) -> Result<String, String> {
    render_body(ctx.cfg, ctx.texts, ctx.renames, agent, out_dir, sink)
}

fn appendix_label(root: &str, file: &str) -> String {
    match file.strip_prefix(root).and_then(|r| r.strip_prefix('/')) {
        Some(r) if !root.is_empty() => r.to_string(),
        _ => file.to_string(),
    }
}

/// The files reachable from `agent`'s entry through `@` references (library files only,
/// breadth first), with their bodies; `within` keeps only those below that folder.
fn at_closure(
    texts: &Texts<'_>,
    renames: &RenameMap,
    agent: &AgentModel,
    within: Option<&str>,
    deps: &mut BTreeSet<String>,
) -> Result<Vec<(String, String)>, String> {
    closure_from(
        texts,
        renames,
        agent,
        (&agent.entry, &agent.body),
        within,
        deps,
    )
}

/// As [`at_closure`], from library file `start` (path, body) of `agent` instead of its
/// entry (neither `start` nor the entry is part of the answer).
fn closure_from(
    texts: &Texts<'_>,
    renames: &RenameMap,
    agent: &AgentModel,
    start: (&str, &str),
    within: Option<&str>,
    deps: &mut BTreeSet<String>,
) -> Result<Vec<(String, String)>, String> {
    let lib = texts.lib();
    let mut seen: HashSet<String> = HashSet::new();
    seen.insert(start.0.to_string());
    let mut order: Vec<(String, String)> = Vec::new();
    let mut queue: VecDeque<(String, String)> = VecDeque::new();
    queue.push_back((start.0.to_string(), start.1.to_string()));
    while let Some((file, text)) = queue.pop_front() {
        for r in refs::scan(&text) {
            if r.kind != RefKind::At {
                continue;
            }
            let res = resolve(texts.root(), lib, renames, &file, &r);
            let Some(p) = res.path else { continue };
            deps.insert(p.clone());
            if p == agent.entry || seen.contains(&p) || !lib.files.contains_key(&p) {
                continue;
            }
            if within.is_some_and(|w| !p.starts_with(&format!("{w}/"))) {
                continue;
            }
            let t = texts.get(&p)?;
            let body = match split_frontmatter(&t) {
                Some((_, b)) => b.to_string(),
                None => strip_bom(&t).to_string(),
            };
            seen.insert(p.clone());
            order.push((p.clone(), body.clone()));
            queue.push_back((p, body));
        }
    }
    Ok(order)
}

/// Room left for the body's appendices under GitHub's limit: the banner and a margin
/// for the target's own lines come out of it.
const INLINE_BUDGET_CHARS: usize = crate::targets::common::MAX_AGENT_BODY_CHARS - 1_000;

fn render_body(
    cfg: &AgentsConfig,
    texts: &Texts<'_>,
    renames: &RenameMap,
    agent: &AgentModel,
    out_dir: &str,
    sink: &mut RenderSink,
) -> Result<String, String> {
    let lib = texts.lib();
    let root = lib.root_of(&agent.entry).to_string();
    let none = HashMap::new();
    if cfg.references == RefMode::Link {
        // Links only depend on whether targets exist, so record the direct targets.
        let place = Place {
            out_dir,
            inlined: &none,
            relocated: &none,
        };
        let body = rewrite(
            texts,
            renames,
            &agent.entry,
            &agent.body,
            &place,
            &mut sink.deps,
        );
        return Ok(ensure_newline(body));
    }
    // Inline: collect the transitive closure of @ references first, so every link to an
    // inlined file can point at its appendix heading.
    let closure = at_closure(texts, renames, agent, None, &mut sink.deps)?;
    let mut linked: BTreeSet<&str> = BTreeSet::new();
    loop {
        let anchors: HashMap<String, String> = closure
            .iter()
            .filter(|(p, _)| !linked.contains(p.as_str()))
            .map(|(p, _)| {
                let label = appendix_label(&root, p);
                (p.clone(), refs::slugify(&format!("Inlined: {label}")))
            })
            .collect();
        let place = Place {
            out_dir,
            inlined: &anchors,
            relocated: &none,
        };
        let mut out = ensure_newline(rewrite(
            texts,
            renames,
            &agent.entry,
            &agent.body,
            &place,
            &mut sink.deps,
        ));
        for (p, body) in &closure {
            if linked.contains(p.as_str()) {
                continue;
            }
            let rewritten = rewrite(texts, renames, p, body, &place, &mut sink.deps);
            out.push_str(&format!(
                "\n---\n\n## Inlined: {}\n\n{}",
                appendix_label(&root, p),
                ensure_newline(demote(&rewritten))
            ));
        }
        let size = out.chars().count();
        // Too big: the largest file still inlined becomes a link instead.
        let largest = closure
            .iter()
            .filter(|(p, _)| !linked.contains(p.as_str()))
            .max_by_key(|(p, b)| (b.len(), std::cmp::Reverse(p.as_str())));
        match largest {
            Some((p, _)) if size > INLINE_BUDGET_CHARS => {
                linked.insert(p.as_str());
            }
            _ => {
                if !linked.is_empty() {
                    let files: Vec<String> =
                        linked.iter().map(|p| appendix_label(&root, p)).collect();
                    sink.notes.push(format!(
                        "agent {}: inlining everything would pass {} characters; linked instead: {}",
                        agent.meta.name,
                        crate::targets::common::MAX_AGENT_BODY_CHARS,
                        files.join(", ")
                    ));
                }
                return Ok(out);
            }
        }
    }
}

/// An agent body whose `@`-referenced files below the agent's root are copied into
/// `out_dir` (keeping their paths below the root) and linked there, as Agent Skills
/// load companion files only when linked. Returns the body and the companions.
pub fn relocated_body(
    ctx: &RenderCtx<'_>,
    agent: &AgentModel,
    out_dir: &str,
    sink: &mut RenderSink,
) -> Result<(String, Vec<(String, String)>), String> {
    relocated_file(ctx, agent, (&agent.entry, &agent.body), out_dir, sink)
}

/// The task files of `agent` (library files below `<root>/tasks/` its `@` references
/// reach, transitively), sorted by path, with their bodies.
pub fn task_files(
    ctx: &RenderCtx<'_>,
    agent: &AgentModel,
    sink: &mut RenderSink,
) -> Result<Vec<(String, String)>, String> {
    let root = ctx.texts.lib().root_of(&agent.entry).to_string();
    if root.is_empty() {
        return Ok(Vec::new());
    }
    let tasks = format!("{root}/tasks/");
    let mut files: Vec<(String, String)> =
        at_closure(ctx.texts, ctx.renames, agent, Some(&root), &mut sink.deps)?
            .into_iter()
            .filter(|(p, _)| p.starts_with(&tasks))
            .collect();
    files.sort();
    Ok(files)
}

/// As [`relocated_body`] for library file `file` (path, body) of `agent`: its body,
/// with the files its `@` references reach below the agent's root copied into
/// `out_dir` and linked there.
pub fn relocated_file(
    ctx: &RenderCtx<'_>,
    agent: &AgentModel,
    file: (&str, &str),
    out_dir: &str,
    sink: &mut RenderSink,
) -> Result<(String, Vec<(String, String)>), String> {
    let (texts, renames) = (ctx.texts, ctx.renames);
    let root = texts.lib().root_of(&agent.entry).to_string();
    let within = (!root.is_empty()).then_some(root.as_str());
    let closure = match within {
        Some(_) => closure_from(texts, renames, agent, file, within, &mut sink.deps)?,
        None => Vec::new(),
    };
    let relocated: HashMap<String, String> = closure
        .iter()
        .map(|(p, _)| (p.clone(), format!("{out_dir}/{}", appendix_label(&root, p))))
        .collect();
    let none = HashMap::new();
    let place = Place {
        out_dir,
        inlined: &none,
        relocated: &relocated,
    };
    let main = ensure_newline(rewrite(
        texts,
        renames,
        file.0,
        file.1,
        &place,
        &mut sink.deps,
    ));
    let mut companions = Vec::with_capacity(closure.len());
    for (p, body) in &closure {
        let Some(dest) = relocated.get(p) else {
            continue;
        };
        let place = Place {
            out_dir: paths::parent(dest),
            inlined: &none,
            relocated: &relocated,
        };
        let text = ensure_newline(rewrite(texts, renames, p, body, &place, &mut sink.deps));
        companions.push((dest.clone(), text));
    }
    Ok((main, companions))
}

fn ensure_newline(mut s: String) -> String {
    while s.ends_with("\n\n") {
        s.pop();
    }
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// Pushes headings two levels down so inlined files nest under their appendix heading.
fn demote(text: &str) -> String {
    let mut fence = FenceState::default();
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.split_inclusive('\n') {
        if !fence.in_code(line) {
            if let Some((level, _)) = atx_heading(line) {
                let t = line.trim_start();
                let extra = 6usize.saturating_sub(level).min(2);
                out.push_str(&"#".repeat(extra));
                out.push_str(t);
                continue;
            }
        }
        out.push_str(line);
    }
    out
}

/// Where the file being rewritten goes and where referenced files went.
struct Place<'a> {
    /// Folder of the output being written.
    out_dir: &'a str,
    /// Library file → anchor of its inlined appendix.
    inlined: &'a HashMap<String, String>,
    /// Library file → repository path of its copy beside the output.
    relocated: &'a HashMap<String, String>,
}

impl Place<'_> {
    fn link_to(&self, p: &str) -> String {
        match self.relocated.get(p) {
            Some(copy) => paths::relative(self.out_dir, copy),
            None => paths::relative(self.out_dir, p),
        }
    }
}

/// Rewrites every reference in `text` (found in `file`) for the output at `place`.
fn rewrite(
    texts: &Texts<'_>,
    renames: &RenameMap,
    file: &str,
    text: &str,
    place: &Place<'_>,
    deps: &mut BTreeSet<String>,
) -> String {
    let lib = texts.lib();
    let mut out = String::with_capacity(text.len() + 256);
    let mut last = 0;
    for r in refs::scan(text) {
        let res = resolve(texts.root(), lib, renames, file, &r);
        let anchor = r
            .anchor
            .as_ref()
            .map(|a| format!("#{a}"))
            .unwrap_or_default();
        let replacement = match (&r.kind, &res.path) {
            (RefKind::At, Some(p)) => {
                deps.insert(p.clone());
                if let Some(slug) = place.inlined.get(p) {
                    format!("[{}](#{slug})", r.display().trim_start_matches('@'))
                } else {
                    format!(
                        "[{}]({}{anchor})",
                        r.display().trim_start_matches('@'),
                        place.link_to(p)
                    )
                }
            }
            // A reference climbing out of the repository cannot be linked; keep it as code.
            (RefKind::At, None) => format!("`{}`", r.display().trim_start_matches('@')),
            (RefKind::Link, Some(p)) => {
                // A link to a missing file is a dependency too: when it appears (or an
                // agent removed from under it is back) the output is looked at again,
                // and sync can report the link as broken by the run that broke it.
                if lib.files.contains_key(p) || !res.exists {
                    deps.insert(p.clone());
                }
                format!("{}{anchor}", place.link_to(p))
            }
            (RefKind::Link, None) => continue,
        };
        out.push_str(&text[last..r.start]);
        out.push_str(&replacement);
        last = r.end;
    }
    out.push_str(&text[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demotes_outside_code() {
        assert_eq!(
            demote("# A\n```\n# c\n```\n###### F\n"),
            "### A\n```\n# c\n```\n###### F\n"
        );
    }
}
