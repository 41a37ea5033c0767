//! The OpenAgentBuilder fixture end to end: every agent gets valid outputs, snapshots of
//! two agents, a second run is a no-op, and `agents check` reports the broken references.

#[path = "agents_common.rs"]
mod common;

use common::*;

/// The non-backup agents of the fixture, by output name.
const FIXTURE_AGENTS: &[&str] = &[
    "backend-engineer",
    "doc-writer",
    "frontend-engineer",
    "master-software-engineer",
    "orchestrator",
    "product-owner",
    "project-manager",
    "prompt-engineer-v2",
    "quality-assurance-engineer",
    "scrum-master",
    "system-analyst",
    "vscode-sdk-integration",
];

fn frontmatter(text: &str) -> (serde_norway::Value, &str) {
    let rest = text.strip_prefix("---\n").expect("starts with frontmatter");
    let end = rest.find("\n---\n").expect("frontmatter closed");
    let v: serde_norway::Value = serde_norway::from_str(&rest[..end + 1]).expect("YAML parses");
    (v, &rest[end + 5..])
}

#[test]
fn fixture_every_agent_gets_valid_outputs_and_second_run_writes_nothing() {
    let Some(d) = fixture_copy() else { return };
    let root = d.path();
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(names(&v, "added"), FIXTURE_AGENTS);
    assert!(v["validation_errors"].as_array().unwrap().is_empty());

    for name in FIXTURE_AGENTS {
        let agent = read(root, &format!(".github/agents/{name}.agent.md"));
        let (fm, body) = frontmatter(&agent);
        assert_eq!(fm["name"].as_str(), Some(*name));
        assert!(!fm["description"].as_str().unwrap().is_empty());
        assert!(body.chars().count() <= 30_000);
        // No @ reference survives outside code (the library's own scanner).
        assert!(
            ctxsync_agents::refs::scan(body)
                .iter()
                .all(|r| r.kind != ctxsync_agents::refs::RefKind::At),
            "{name}: @ reference left"
        );
        let prompt = read(root, &format!(".github/prompts/{name}.prompt.md"));
        let (pfm, pbody) = frontmatter(&prompt);
        assert_eq!(pfm["agent"].as_str(), Some(*name));
        assert_eq!(pfm["name"].as_str(), Some(*name));
        assert!(!pfm["description"].as_str().unwrap().is_empty());
        assert!(
            !pbody.contains("](") && !pbody.contains('@'),
            "prompt body is self-contained"
        );
    }
    let produced = std::fs::read_dir(root.join(".github/agents"))
        .unwrap()
        .count();
    assert_eq!(
        produced,
        FIXTURE_AGENTS.len(),
        "backup agents must not be rendered"
    );
    // The new output folders were staged beside and moved in whole: nothing else is left.
    let mut github: Vec<String> = std::fs::read_dir(root.join(".github"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    github.sort();
    assert_eq!(github, ["agents", "prompts", "skills"]);
    // Skills are on by default, one per task file: the doc-writer's four referenced
    // tasks (its unreferenced `log-development-session.md` is not one).
    let mut doc_skills: Vec<String> = std::fs::read_dir(root.join(".github/skills"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("doc-writer-"))
        .collect();
    doc_skills.sort();
    assert_eq!(
        doc_skills,
        [
            "doc-writer-audit-documentation",
            "doc-writer-create-documentation",
            "doc-writer-review-documentation",
            "doc-writer-update-documentation"
        ]
    );

    // References became links that resolve from the output folder.
    let orch = read(root, ".github/agents/orchestrator.agent.md");
    let link = "](../../agents/core/orchestrator/modules/capabilities/workflow-management-capabilities.md)";
    assert!(orch.contains(link), "{orch}");
    assert!(root.join(".github/agents").join("../../agents/core/orchestrator/modules/capabilities/workflow-management-capabilities.md").exists());

    let before = mtimes(&root.join(".github"));
    let reg_before = std::fs::metadata(root.join(".ctxsync/agents/registry.json"))
        .unwrap()
        .modified()
        .unwrap();
    let (code, v2) = agents_json(root, &["sync"]);
    assert_eq!(code, 0);
    assert!(v2["written"].as_array().unwrap().is_empty(), "{v2}");
    assert!(v2["rendered"].as_array().unwrap().is_empty(), "{v2}");
    assert_eq!(mtimes(&root.join(".github")), before);
    let reg_after = std::fs::metadata(root.join(".ctxsync/agents/registry.json"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(
        reg_before, reg_after,
        "a no-op run does not rewrite the registry"
    );

    // --full re-renders everything but still writes nothing.
    let (code, v3) = agents_json(root, &["sync", "--full"]);
    assert_eq!(code, 0);
    assert_eq!(
        v3["rendered"].as_array().unwrap().len(),
        FIXTURE_AGENTS.len()
    );
    assert!(v3["written"].as_array().unwrap().is_empty());
    assert_eq!(mtimes(&root.join(".github")), before);
    let (code, _) = agents_json(root, &["sync", "--check"]);
    assert_eq!(code, 0, "up to date");
}

#[test]
fn fixture_snapshots() {
    let Some(d) = fixture_copy() else { return };
    let root = d.path();
    assert_eq!(agents(root, &["sync"]).status.code(), Some(0));
    insta::assert_snapshot!(
        "orchestrator_agent",
        read(root, ".github/agents/orchestrator.agent.md")
    );
    insta::assert_snapshot!(
        "orchestrator_prompt",
        read(root, ".github/prompts/orchestrator.prompt.md")
    );
    insta::assert_snapshot!(
        "backend_engineer_agent",
        read(root, ".github/agents/backend-engineer.agent.md")
    );
}

#[test]
fn fixture_check_reports_every_broken_reference() {
    let Some(d) = fixture_copy() else { return };
    let root = d.path();
    let (code, v) = agents_json(root, &["check"]);
    assert_eq!(code, 1, "broken references make check fail");
    let broken = v["broken_files"].as_array().unwrap();
    let anchors = v["broken_anchors"].as_array().unwrap();
    assert_eq!(broken.len(), BROKEN_FILES, "{:#}", v["broken_files"]);
    assert_eq!(anchors.len(), BROKEN_ANCHORS, "{:#}", v["broken_anchors"]);
    // Not stopped at the first: findings come from many files, each with a line.
    let files: std::collections::BTreeSet<_> =
        broken.iter().map(|f| f["file"].as_str().unwrap()).collect();
    assert!(files.len() > 5, "{files:?}");
    assert!(broken.iter().all(|f| f["line"].as_u64().unwrap() > 0));
    // A known one: the task refers to a module without its theme folder.
    assert!(broken.iter().any(|f| f["file"]
        == "agents/core/orchestrator/tasks/manage-resources.md"
        && f["reference"] == "@modules/performance-metrics.md"
        && f["line"] == 111));
    assert!(anchors
        .iter()
        .any(|f| f["file"] == "agents/core/orchestrator/orchestrator.md"
            && f["reference"] == "@modules/metrics/performance-metrics.md#workflow-efficiency"));
    assert!(
        !v["cycles"].as_array().unwrap().is_empty(),
        "the memory modules reference each other"
    );
    assert_eq!(v["unreferenced"].as_array().unwrap().len(), UNREFERENCED);

    let out = agents(root, &["check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("agents/core/orchestrator/tasks/manage-resources.md:111: broken reference @modules/performance-metrics.md"), "{text}");
}

const BROKEN_FILES: usize = 23;
const BROKEN_ANCHORS: usize = 17;
const UNREFERENCED: usize = 7;

/// Every output file below `dir`, by name.
fn output_names(root: &std::path::Path, dir: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.join(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Issue 10, 8a: a modular agent's folder renamed (it no longer holds `<folder>.md`)
/// once published its 32 modules, tasks and checklists as agents. Its main file stays
/// the one agent (same name, links to the new folder), nothing else in it becomes an
/// agent, before and after a first sync; with the main file gone too, the folder is
/// reported and only its agent's outputs go.
#[test]
fn a_renamed_modular_agent_folder_publishes_no_module_task_or_checklist() {
    let Some(d) = fixture_copy() else { return };
    let root = d.path();
    let want: Vec<String> = FIXTURE_AGENTS
        .iter()
        .map(|n| format!("{n}.agent.md"))
        .collect();
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    std::fs::rename(
        root.join("agents/core/orchestrator"),
        root.join("agents/core/orchestrator-renamed"),
    )
    .unwrap();
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["agents"], FIXTURE_AGENTS.len(), "{v}");
    assert!(names(&v, "added").is_empty(), "{v}");
    assert!(names(&v, "removed").is_empty(), "{v}");
    assert_eq!(names(&v, "updated"), ["orchestrator"], "{v}");
    assert_eq!(output_names(root, ".github/agents"), want);
    assert_eq!(
        output_names(root, ".github/prompts").len(),
        FIXTURE_AGENTS.len()
    );
    let orch = read(root, ".github/agents/orchestrator.agent.md");
    let link = "](../../agents/core/orchestrator-renamed/modules/capabilities/workflow-management-capabilities.md)";
    assert!(orch.contains(link), "{orch}");
    let (code, v) = agents_json(root, &["check"]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(
        v["unreferenced"].as_array().unwrap().len(),
        UNREFERENCED,
        "{v}"
    );

    // The same layout synced from nothing.
    std::fs::remove_dir_all(root.join(".github")).unwrap();
    std::fs::remove_dir_all(root.join(".ctxsync")).unwrap();
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(names(&v, "added"), FIXTURE_AGENTS);
    assert_eq!(output_names(root, ".github/agents"), want);

    // Without its main file the folder is reported; its modules are still no agents.
    std::fs::remove_file(root.join("agents/core/orchestrator-renamed/orchestrator.md")).unwrap();
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(names(&v, "removed"), ["orchestrator"], "{v}");
    assert!(names(&v, "added").is_empty(), "{v}");
    assert_eq!(v["agents"], FIXTURE_AGENTS.len() - 1, "{v}");
    assert!(
        names(&v, "warnings").iter().any(|w| w.contains(
            "agents/core/orchestrator-renamed: holds modules/, tasks/ or checklists/ but no agent file"
        )),
        "{v}"
    );
    assert_eq!(
        output_names(root, ".github/agents").len(),
        FIXTURE_AGENTS.len() - 1
    );
}
