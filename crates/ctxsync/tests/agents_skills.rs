//! Issue 16: Agent Skills as a target. The skill validator (written from the agentskills
//! specification, in `agents_host_rules.rs`) and its own refusals, skill names normalised
//! or refused, task skills on the fixture, and their incremental guarantees.

#[path = "agents_common.rs"]
mod common;
#[path = "agents_host_rules.rs"]
mod rules;

use common::*;

#[test]
fn skill_names_that_break_the_spec_are_normalised_or_refused() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    write(
        root,
        "ctxsync.toml",
        "[agents]\ntargets = [\"vscode-agent\", \"skills\", \"vscode-prompt\"]\n",
    );
    write(
        root,
        "agents/team/data_loader.v2.md",
        "---\nname: data_loader.v2\ndescription: Loads data.\n---\nLoad.\n",
    );
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    assert!(root
        .join(".github/skills/data-loader-v2/SKILL.md")
        .is_file());
    assert!(!root.join(".github/skills/data_loader.v2").exists());
    assert!(names(&v, "notes")
        .iter()
        .any(|n| n.contains("\"data_loader.v2\"") && n.contains("\"data-loader-v2\"")));
    rules::validate_tree(root);

    // Two agents whose names normalise to the same skill: refused, nothing written.
    let e = tempfile::tempdir().unwrap();
    let root = e.path();
    write(
        root,
        "ctxsync.toml",
        "[agents]\ntargets = [\"vscode-agent\", \"skills\", \"vscode-prompt\"]\n",
    );
    write(
        root,
        "agents/team/a_b.md",
        "---\nname: a_b\ndescription: One.\n---\nOne.\n",
    );
    write(
        root,
        "agents/team/a-b.md",
        "---\nname: a-b\ndescription: Two.\n---\nTwo.\n",
    );
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 2, "{v}");
    assert!(
        v["validation_errors"]
            .to_string()
            .contains(".github/skills/a-b/SKILL.md"),
        "{v}"
    );
    assert!(!root.join(".github").exists());
}

/// The skill validator (written from agentskills.io/specification) refuses what the
/// specification rules out, so the tests that rely on it can fail.
#[test]
fn the_skill_validator_refuses_what_the_specification_rules_out() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    write(
        root,
        ".github/skills/pdf-tools/references/guide.md",
        "# Guide\n",
    );
    let ok = "---\nname: pdf-tools\ndescription: Works with PDF files; use for PDFs.\nlicense: MIT\nmetadata:\n  author: me\nallowed-tools: Read Bash\n---\nSee [the guide](references/guide.md).\n";
    rules::skill(root, ".github/skills/pdf-tools/SKILL.md", ok).unwrap();
    let long = format!("description: {}\n", "d".repeat(1025));
    for (what, from, to) in [
        ("upper case", "name: pdf-tools", "name: PDF-tools"),
        ("double hyphen", "name: pdf-tools", "name: pdf--tools"),
        ("leading hyphen", "name: pdf-tools", "name: -pdf-tools"),
        ("not the folder", "name: pdf-tools", "name: pdf-tool"),
        (
            "no description",
            "description: Works with PDF files; use for PDFs.\n",
            "",
        ),
        (
            "long description",
            "description: Works with PDF files; use for PDFs.\n",
            &long,
        ),
        ("unknown key", "license: MIT", "colour: red"),
        ("metadata not strings", "author: me", "author: [me]"),
        ("comma tools", "Read Bash", "Read, Bash"),
        (
            "broken companion link",
            "references/guide.md",
            "references/gone.md",
        ),
        (
            "@ reference left",
            "See [the guide]",
            "See @modules/x.md and [the guide]",
        ),
    ] {
        let bad = ok.replacen(from, to, 1);
        assert_ne!(bad, ok, "{what}: the case changes the file");
        assert!(
            rules::skill(root, ".github/skills/pdf-tools/SKILL.md", &bad).is_err(),
            "{what} must be refused:\n{bad}"
        );
    }
    let name65 = "a".repeat(65);
    let bad = ok.replace("pdf-tools", &name65);
    assert!(rules::skill(root, &format!(".github/skills/{name65}/SKILL.md"), &bad).is_err());
}

/// The default: each task file an agent references becomes a skill `<agent>-<task>`;
/// agents without task files become one skill each. Every file follows the spec.
#[test]
fn task_skills_on_the_fixture_follow_the_specification() {
    let Some(d) = fixture_copy() else { return };
    let root = d.path();
    all_targets(root, "");
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    let counts = rules::validate_tree(root);
    assert_eq!(
        [counts[0], counts[1], counts[3], counts[4], counts[5]],
        [12; 5]
    );
    let skills: Vec<String> = std::fs::read_dir(root.join(".github/skills"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(counts[2], skills.len());
    // Every skill belongs to one agent of the fixture, as itself or as one of its tasks.
    let agents = [
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
    for s in &skills {
        assert!(
            agents
                .iter()
                .any(|a| s == a || s.starts_with(&format!("{a}-"))),
            "{s}"
        );
    }
    let text = read(
        root,
        ".github/skills/doc-writer-create-documentation/SKILL.md",
    );
    let (fm, body) = rules::split(&text).unwrap();
    let description = fm["description"].as_str().unwrap();
    assert!(
        description.starts_with("Create comprehensive documentation")
            && description.ends_with("(A task of the doc-writer agent.)"),
        "{description}"
    );
    assert!(body.contains("## Task Workflow (APDRDV Method)"), "{body}");
    assert!(text.contains("agents/core/doc-writer/tasks/create-documentation.md"));
    // A task that references another task carries a linked copy of it.
    let sdk = read(
        root,
        ".github/skills/vscode-sdk-integration-evolve-sdk-capabilities/SKILL.md",
    );
    let companions = rules::files_below(
        &root.join(".github/skills/vscode-sdk-integration-evolve-sdk-capabilities"),
    );
    assert!(companions.len() > 1, "{sdk}");
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    assert!(written(&v).is_empty(), "second run writes nothing: {v}");
    // One skill per agent instead, by config.
    write(
        root,
        "ctxsync.toml",
        &format!("[agents]\n{ALL_TARGETS}skills = \"per-agent\"\n"),
    );
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(rules::validate_tree(root), [12; 6]);
    assert!(!root
        .join(".github/skills/doc-writer-create-documentation")
        .exists());
    assert!(root.join(".github/skills/doc-writer/SKILL.md").is_file());
}

/// Task skills are incremental too: a task edit rewrites only that skill; a task
/// reference added or removed adds or removes exactly that skill; a run after each
/// writes nothing.
#[test]
fn task_skills_follow_task_edits_exactly() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    small_library(root);
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    rules::validate_tree(root);
    assert!(root.join(".github/skills/alpha-plan/SKILL.md").is_file());
    assert!(root.join(".github/skills/beta/SKILL.md").is_file());
    assert!(root.join(".github/skills/gamma/SKILL.md").is_file());
    assert!(!root.join(".github/skills/alpha").exists());

    write(
        root,
        "agents/team/alpha/tasks/plan.md",
        "# Plan\n\nUse @modules/shared.md for context, then plan twice.\n",
    );
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(names(&v, "rendered"), ["alpha"]);
    assert_eq!(written(&v), [".github/skills/alpha-plan/SKILL.md"]);

    write(
        root,
        "agents/team/alpha/tasks/Deep_Review.v2.md",
        "---\ndescription: Reviews a plan in depth.\n---\n# Deep review\n\nCheck @modules/metrics.md#speed.\n",
    );
    write(root, "agents/team/alpha/alpha.md", "# Alpha Agent\n\n> **Priority**: Critical\n> **Agent Version**: 1.0\n\n## Purpose Statement\nAlpha plans.\n\n## Tasks\n- Plan: @tasks/plan.md\n- Review: @tasks/Deep_Review.v2.md\n- Metrics: @modules/metrics.md#speed\n");
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    let w = written(&v);
    assert!(
        w.contains(&".github/skills/alpha-deep-review-v2/SKILL.md".to_string())
            && w.contains(&".github/skills/alpha-deep-review-v2/modules/metrics.md".to_string())
            && !w
                .iter()
                .any(|p| p.starts_with(".github/skills/alpha-plan/")),
        "{w:?}"
    );
    // The task's name broke the spec: normalised, with a note, never written as is.
    assert!(names(&v, "notes")
        .iter()
        .any(|n| n.contains("\"alpha-Deep_Review.v2\"") && n.contains("\"alpha-deep-review-v2\"")));
    let (fm, _) =
        rules::split(&read(root, ".github/skills/alpha-deep-review-v2/SKILL.md")).unwrap();
    assert_eq!(
        fm["description"].as_str(),
        Some("Reviews a plan in depth. (A task of the alpha agent.)")
    );
    rules::validate_tree(root);
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    assert!(written(&v).is_empty(), "{v}");

    // No task left: the task skills go whole and the agent becomes one skill.
    write(root, "agents/team/alpha/alpha.md", "# Alpha Agent\n\n## Purpose Statement\nAlpha plans.\n\n- Metrics: @modules/metrics.md#speed\n");
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    assert!(!root.join(".github/skills/alpha-plan").exists(), "{v}");
    assert!(!root.join(".github/skills/alpha-deep-review-v2").exists());
    assert!(root
        .join(".github/skills/alpha/modules/metrics.md")
        .is_file());
    rules::validate_tree(root);
    let (code, v) = agents_json(root, &["sync"]);
    assert!(code == 0 && written(&v).is_empty(), "{v}");
}

/// Skill names are cut at 64 characters; two tasks of one agent that would share a
/// folder are refused and nothing is written.
#[test]
fn task_skill_names_are_cut_to_the_limit_and_collisions_refused() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let agent = "a".repeat(56);
    let main = format!("agents/team/{agent}/{agent}.md");
    write(root, &main, "# Long\n\n- @tasks/review-one.md\n");
    write(
        root,
        &format!("agents/team/{agent}/tasks/review-one.md"),
        "# One\n\nFirst.\n",
    );
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    let cut = format!("{agent}-review");
    assert_eq!(cut.len(), 64 - 1);
    assert!(
        root.join(format!(".github/skills/{cut}/SKILL.md"))
            .is_file(),
        "{v}"
    );
    rules::validate_tree(root);
    write(
        root,
        &main,
        "# Long\n\n- @tasks/review-one.md\n- @tasks/review-two.md\n",
    );
    write(
        root,
        &format!("agents/team/{agent}/tasks/review-two.md"),
        "# Two\n\nSecond.\n",
    );
    let before = mtimes(&root.join(".github"));
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 2, "{v}");
    assert!(v["validation_errors"].to_string().contains(&cut), "{v}");
    assert_eq!(mtimes(&root.join(".github")), before, "nothing written");
}
