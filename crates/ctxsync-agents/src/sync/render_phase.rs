//! The render phase: every dirty agent rendered and validated on worker threads,
//! critical ones first, with the hashes the registry will record.

use super::*;

pub(super) struct Rendered {
    pub(super) entry: AgentEntry,
    pub(super) name: String,
    pub(super) priority: Priority,
    pub(super) version: Option<String>,
    /// The agents its handoffs name.
    pub(super) handoffs: Vec<String>,
    pub(super) outputs: Vec<Output>,
    /// What validation found wrong with the outputs (checked on the render thread).
    pub(super) problems: Vec<String>,
    /// What the targets dropped or mapped.
    pub(super) notes: Vec<String>,
    /// BLAKE3 of each output's bytes, in the order of `outputs` (hashed on the render
    /// thread too).
    pub(super) hashes: Vec<String>,
    /// Each dependency and its hash now (`None`: missing), for the registry.
    pub(super) sources: BTreeMap<String, Option<String>>,
}

pub(super) fn render_all(
    file_hashes: &HashMap<String, String>,
    cfg: &AgentsConfig,
    lib: &Library,
    texts: &Texts<'_>,
    renames: &RenameMap,
    work: &[(Priority, &AgentEntry)],
    progress: Progress<'_>,
) -> (Vec<Rendered>, Vec<String>) {
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let out: Mutex<(Vec<Rendered>, Vec<String>)> = Mutex::new((Vec::new(), Vec::new()));
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(8)
        .min(work.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut local = (Vec::new(), Vec::new());
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((_, a)) = work.get(i) else { break };
                    match render_one(cfg, lib, texts, file_hashes, renames, a) {
                        Ok(r) => local.0.push(r),
                        Err(e) => local.1.push(e),
                    }
                    let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                    progress(d, work.len());
                }
                if let Ok(mut o) = out.lock() {
                    o.0.extend(local.0);
                    o.1.extend(local.1);
                }
            });
        }
    });
    let (r, mut e) = out.into_inner().unwrap_or_default();
    e.sort();
    (r, e)
}

pub(super) fn render_one(
    cfg: &AgentsConfig,
    lib: &Library,
    texts: &Texts<'_>,
    file_hashes: &HashMap<String, String>,
    renames: &RenameMap,
    a: &AgentEntry,
) -> std::result::Result<Rendered, String> {
    let text = texts.get(&a.entry)?;
    let parsed = parse::parse_agent(&a.entry, &text)?;
    let model = AgentModel {
        meta: parsed.meta,
        entry: a.entry.clone(),
        body: parsed.body,
        claude_source: crate::targets::is_claude_source(cfg, &a.entry),
    };
    let r = render::render(cfg, texts, renames, &model)?;
    let mut problems = Vec::new();
    for o in &r.outputs {
        if lib.files.contains_key(&o.path) {
            problems.push(format!(
                "{}: output of agent {:?} would overwrite a library file",
                o.path, model.meta.name
            ));
        }
        problems.extend(validate::validate(cfg, o));
    }
    let hashes = r.outputs.iter().map(|o| hash(&o.bytes)).collect();
    let sources = r
        .deps
        .iter()
        .map(|d| (d.clone(), file_hashes.get(d).cloned()))
        .collect();
    Ok(Rendered {
        hashes,
        sources,
        problems,
        notes: r.notes,
        entry: a.clone(),
        handoffs: model
            .meta
            .handoffs
            .iter()
            .map(|h| h.agent.clone())
            .collect(),
        name: model.meta.name,
        priority: model.meta.priority,
        version: model.meta.version,
        outputs: r.outputs,
    })
}
