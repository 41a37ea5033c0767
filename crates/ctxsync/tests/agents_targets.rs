//! Issue 16: every agent host as a target. Outputs checked against each host's
//! documented rules (`agents_host_rules.rs`, not the renderer), snapshots of one agent
//! per target, skill names, the tool/model mapping, the mirror layout, inline mode on
//! the fixture and the incremental guarantees in every target.

#[path = "agents_common.rs"]
mod common;
#[path = "agents_host_rules.rs"]
mod rules;

use common::*;

/// A Claude Code library as a team writes one: tools and models in Claude's names.
fn claude_library(root: &std::path::Path) {
    write(
        root,
        ".claude/agents/code-reviewer.md",
        "---\nname: code-reviewer\ndescription: Reviews diffs for bugs and style.\ntools: Read, Grep, Glob, Bash\nmodel: sonnet\n---\nYou review diffs. Follow [the guide](../../docs/review.md).\n",
    );
    write(
        root,
        ".claude/agents/planner.md",
        "---\nname: planner\ndescription: Plans work before code is written.\ntools: Read, WebFetch, Teleport\nmodel: opus\n---\nPlan first.\n",
    );
    write(root, "docs/review.md", "# Review guide\n");
}

#[test]
fn fixture_with_every_target_validates_against_each_hosts_rules() {
    let Some(d) = fixture_copy() else { return };
    let root = d.path();
    all_targets(root, "skills = \"per-agent\"\n");
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    let counts = rules::validate_tree(root);
    // 12 agents in every target (none of the fixture's is a Claude Code subagent).
    assert_eq!(counts, [12; 6], "{v}");
    // Skills carry their modules: the orchestrator's linked companions exist.
    let skill = read(root, ".github/skills/orchestrator/SKILL.md");
    assert!(
        skill.contains("](modules/capabilities/workflow-management-capabilities.md"),
        "{skill}"
    );
    assert!(root
        .join(
            ".github/skills/orchestrator/modules/capabilities/workflow-management-capabilities.md"
        )
        .is_file());
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    assert!(written(&v).is_empty(), "second run writes nothing: {v}");
}

#[test]
fn claude_library_with_every_target_validates_and_maps_names() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    claude_library(root);
    all_targets(root, "duplicate_claude_agents = true\n");
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    let counts = rules::validate_tree(root);
    // Claude Code sources are not written back over themselves.
    assert_eq!(counts, [2, 2, 2, 0, 2, 2]);
    assert!(!written(&v).iter().any(|p| p.starts_with(".claude/")));
    // The unknown tool is reported for every host it was dropped from, never copied.
    let notes: Vec<String> = names(&v, "notes");
    for dir in [".github/agents", ".gemini/agents", ".github/skills"] {
        assert!(
            notes
                .iter()
                .any(|n| n.starts_with(dir) && n.contains("\"Teleport\"")),
            "{dir}: {notes:?}"
        );
    }
    for text in [
        read(root, ".github/agents/planner.agent.md"),
        read(root, ".gemini/agents/planner.md"),
        read(root, ".codex/agents/planner.toml"),
    ] {
        assert!(!text.contains("Teleport"), "{text}");
    }
    assert!(notes
        .iter()
        .any(|n| n.starts_with(".codex/agents/planner.toml") && n.contains("opus")));
    let gemini = read(root, ".gemini/agents/code-reviewer.md");
    let (fm, _) = rules::split(&gemini).unwrap();
    let tools: Vec<&str> = fm["tools"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(
        tools,
        [
            "read_file",
            "read_many_files",
            "list_directory",
            "search_file_content",
            "glob",
            "run_shell_command"
        ]
    );
}

/// Claude → VS Code → Claude keeps what the agent may do: the VS Code copy of a Claude
/// Code subagent, used as the source of another repository, maps back to Claude tools
/// that map to the same VS Code aliases, and the model comes back as the same alias.
#[test]
fn tool_and_model_mapping_round_trips_claude_vscode_claude() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    claude_library(root);
    write(
        root,
        "ctxsync.toml",
        "[agents]\nduplicate_claude_agents = true\n",
    );
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    let vscode = read(root, ".github/agents/code-reviewer.agent.md");
    let (fm, _) = rules::split(&vscode).unwrap();
    let tools: Vec<&str> = fm["tools"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tools, ["read", "search", "execute"]);
    assert_eq!(fm["model"].as_str(), Some("Claude Sonnet 4.5 (copilot)"));

    // The VS Code agent becomes the source of a second repository with a Claude target.
    let e = tempfile::tempdir().unwrap();
    let back = e.path();
    write(back, "agents/team/code-reviewer.md", &vscode);
    write(back, "ctxsync.toml", "[agents]\ntargets = [\"claude\"]\n");
    let (code, v) = agents_json(back, &["sync"]);
    assert_eq!(code, 0, "{v}");
    assert!(names(&v, "notes").is_empty(), "{v}");
    let claude = read(back, ".claude/agents/code-reviewer.md");
    rules::claude(".claude/agents/code-reviewer.md", &claude).unwrap();
    let (fm, _) = rules::split(&claude).unwrap();
    let tools = fm["tools"].as_str().unwrap();
    for t in ["Read", "Grep", "Glob", "Bash"] {
        assert!(tools.split(", ").any(|x| x == t), "{t} in {tools}");
    }
    assert!(
        !tools.contains("Edit") && !tools.contains("Write"),
        "no capability added: {tools}"
    );
    assert_eq!(fm["model"].as_str(), Some("sonnet"));
}

#[test]
fn one_agent_per_target_snapshots() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    small_library(root);
    all_targets(root, "skills = \"per-agent\"\n");
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    for (name, path) in [
        ("vscode_agent", ".github/agents/alpha.agent.md"),
        ("vscode_prompt", ".github/prompts/alpha.prompt.md"),
        ("skill", ".github/skills/alpha/SKILL.md"),
        ("skill_companion", ".github/skills/alpha/tasks/plan.md"),
        ("claude", ".claude/agents/alpha.md"),
        ("codex", ".codex/agents/alpha.toml"),
        ("gemini", ".gemini/agents/alpha.md"),
    ] {
        insta::assert_snapshot!(name, read(root, path));
    }
    // The default: a skill per task file.
    let e = tempfile::tempdir().unwrap();
    let root = e.path();
    small_library(root);
    all_targets(root, "");
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    for (name, path) in [
        ("skill_task", ".github/skills/alpha-plan/SKILL.md"),
        (
            "skill_task_companion",
            ".github/skills/alpha-plan/modules/shared.md",
        ),
    ] {
        insta::assert_snapshot!(name, read(root, path));
    }
}

/// One module edit re-renders exactly the agents that reach it, in every target, and
/// a second run writes nothing.
#[test]
fn incremental_guarantees_hold_in_every_target() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    small_library(root);
    all_targets(root, "references = \"inline\"\nskills = \"per-agent\"\n");
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    rules::validate_tree(root);
    let before = mtimes(root);
    write(
        root,
        "agents/team/alpha/modules/shared.md",
        "# Shared\n\nShared text v2.\n",
    );
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(names(&v, "rendered"), ["alpha"]);
    // Every target that carries the module's text: inlined, or the skill's copy (the
    // prompt file and SKILL.md only link, so they are unchanged).
    assert_eq!(
        written(&v),
        [
            ".claude/agents/alpha.md",
            ".codex/agents/alpha.toml",
            ".gemini/agents/alpha.md",
            ".github/agents/alpha.agent.md",
            ".github/skills/alpha/modules/shared.md",
        ]
    );
    for out in [
        ".claude/agents/alpha.md",
        ".codex/agents/alpha.toml",
        ".gemini/agents/alpha.md",
        ".github/agents/alpha.agent.md",
        ".github/skills/alpha/modules/shared.md",
    ] {
        assert!(read(root, out).contains("Shared text v2."), "{out}");
    }
    let after = mtimes(root);
    let changed: Vec<_> = after
        .iter()
        .filter(|f| !before.contains(f))
        .map(|(p, _)| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
        .filter(|p| !p.starts_with(".ctxsync") && !p.starts_with("agents/"))
        .collect();
    assert_eq!(changed.len(), 5, "nothing else touched: {changed:?}");
    rules::validate_tree(root);
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    assert!(written(&v).is_empty(), "{v}");

    // A reference removed: the skill's copy of that file goes with it.
    write(
        root,
        "agents/team/alpha/alpha.md",
        "# Alpha Agent\n\n> **Priority**: Critical\n> **Agent Version**: 1.0\n\n## Purpose Statement\nAlpha plans.\n\n- Metrics: @modules/metrics.md#speed\n",
    );
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    let deleted = names(&v, "deleted");
    assert_eq!(
        deleted,
        [
            ".github/skills/alpha/modules/shared.md",
            ".github/skills/alpha/tasks/plan.md"
        ]
    );
    assert!(root
        .join(".github/skills/alpha/modules/metrics.md")
        .is_file());
    assert!(
        !root.join(".github/skills/alpha/tasks").exists(),
        "an emptied skill folder goes"
    );

    // A removed agent's skill folder goes whole; rollback brings it back.
    std::fs::remove_dir_all(root.join("agents/team/alpha")).unwrap();
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    assert!(!root.join(".github/skills/alpha").exists(), "{v}");
    assert!(root.join(".github/skills/beta/SKILL.md").is_file());
    let (code, v) = agents_json(root, &["rollback"]);
    assert_eq!(code, 0, "{v}");
    assert!(root
        .join(".github/skills/alpha/modules/metrics.md")
        .is_file());
    rules::validate_tree(root);
}

#[test]
fn mirror_layout_writes_group_folders_and_leaves_hand_written_prompts_alone() {
    let Some(d) = fixture_copy() else { return };
    let root = d.path();
    let hand = std::fs::read(root.join("integrations/vscode/prompts/core/orchestrator.prompt.md"))
        .unwrap();
    write(root, "ctxsync.toml", "[agents]\nmirror_groups = true\n");
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    assert!(root
        .join(".github/prompts/core/orchestrator.prompt.md")
        .is_file());
    assert!(root
        .join(".github/prompts/development/backend-engineer.prompt.md")
        .is_file());
    rules::validate_tree(root);

    // Pointed at the folder of hand-written prompt files, ctxsync writes the ones it
    // does not find and never touches a file the registry does not own.
    let e = fixture_copy().unwrap();
    let root = e.path();
    write(
        root,
        "ctxsync.toml",
        "[agents]\nmirror_groups = true\nprompts_dir = \"integrations/vscode/prompts\"\n",
    );
    let (_, v) = agents_json(root, &["sync"]);
    assert_eq!(
        std::fs::read(root.join("integrations/vscode/prompts/core/orchestrator.prompt.md"))
            .unwrap(),
        hand
    );
    assert!(v["conflicts"]
        .to_string()
        .contains("integrations/vscode/prompts/core/orchestrator.prompt.md"));
    assert!(root
        .join("integrations/vscode/prompts/management/scrum-master.prompt.md")
        .is_file());
}

#[test]
fn inline_mode_on_the_fixture_fits_every_agent() {
    let Some(d) = fixture_copy() else { return };
    let root = d.path();
    all_targets(root, "references = \"inline\"\n");
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    let counts = rules::validate_tree(root);
    // 25 skills: one per referenced task file, one per agent without any.
    assert_eq!(counts, [12, 12, 25, 12, 12, 12]);
    for f in rules::files_below(&root.join(".github/agents")) {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(text.chars().count() <= 30_000, "{}", f.display());
    }
}

/// Handoffs are written for VS Code (its documented form), validated against the
/// library's agents, and dropped with a note for hosts without them.
#[test]
fn handoffs_are_validated_against_existing_agents() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    write(
        root,
        "agents/team/planner.md",
        "---\nname: planner\ndescription: Plans.\nhandoffs:\n  - label: Build it\n    agent: builder\n    prompt: Implement the plan.\n  - reviewer\n---\nPlan.\n",
    );
    write(
        root,
        "agents/team/builder.md",
        "---\nname: builder\ndescription: Builds.\n---\nBuild.\n",
    );
    all_targets(root, "");
    // `reviewer` does not exist: refused, nothing written.
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 2, "{v}");
    assert!(
        v["validation_errors"]
            .to_string()
            .contains("handoff to agent \\\"reviewer\\\""),
        "{v}"
    );
    assert!(!root.join(".github").exists());
    write(
        root,
        "agents/team/reviewer.md",
        "---\nname: reviewer\ndescription: Reviews.\n---\nReview.\n",
    );
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    rules::validate_tree(root);
    let (fm, _) = rules::split(&read(root, ".github/agents/planner.agent.md")).unwrap();
    let h = fm["handoffs"].as_sequence().unwrap();
    assert_eq!(h[0]["agent"].as_str(), Some("builder"));
    assert_eq!(h[0]["label"].as_str(), Some("Build it"));
    assert_eq!(h[0]["prompt"].as_str(), Some("Implement the plan."));
    assert_eq!(h[1]["agent"].as_str(), Some("reviewer"));
    assert!(names(&v, "notes")
        .iter()
        .any(|n| n.starts_with(".claude/agents/planner.md") && n.contains("handoffs")));
    assert!(!read(root, ".claude/agents/planner.md").contains("handoffs"));
}

/// A handoff is checked against the agents of each run, also when the agent holding it
/// is not re-rendered: removing the agent it names is refused until the handoff goes.
/// `--agent` checks handoffs against the whole library.
#[test]
fn a_handoff_to_an_agent_removed_in_an_incremental_run_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    write(
        root,
        "agents/team/planner.md",
        "---\nname: planner\ndescription: Plans.\nhandoffs:\n  - label: Build it\n    agent: builder\n---\nPlan.\n",
    );
    write(
        root,
        "agents/team/builder.md",
        "---\nname: builder\ndescription: Builds.\n---\nBuild.\n",
    );
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    let (code, v) = agents_json(root, &["sync", "--agent", "planner", "--full"]);
    assert_eq!(code, 0, "{v}");

    std::fs::remove_file(root.join("agents/team/builder.md")).unwrap();
    let before = mtimes(&root.join(".github"));
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 2, "{v}");
    assert!(
        names(&v, "rendered").is_empty(),
        "planner is not re-rendered: {v}"
    );
    let errs = v["validation_errors"].to_string();
    assert!(
        errs.contains("agents/team/planner.md: handoff to agent \\\"builder\\\"")
            && errs.contains("removed by this run"),
        "{v}"
    );
    assert_eq!(mtimes(&root.join(".github")), before, "nothing written");
    assert!(root.join(".github/agents/builder.agent.md").is_file());
    let (code, v) = agents_json(root, &["sync", "--check"]);
    assert_ne!(code, 0, "{v}");

    write(
        root,
        "agents/team/planner.md",
        "---\nname: planner\ndescription: Plans.\n---\nPlan.\n",
    );
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    assert!(
        !root.join(".github/agents/builder.agent.md").exists(),
        "{v}"
    );
    assert_eq!(names(&v, "removed"), ["builder"]);
}

/// The same guarantee with the default task skills: a module edit re-renders exactly
/// the agent that reaches it, in every target, and the next run writes nothing.
#[test]
fn incremental_guarantees_hold_in_every_target_with_task_skills() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    small_library(root);
    all_targets(root, "references = \"inline\"\n");
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    rules::validate_tree(root);
    write(
        root,
        "agents/team/alpha/modules/shared.md",
        "# Shared\n\nShared text v3.\n",
    );
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(names(&v, "rendered"), ["alpha"]);
    let expected = [
        ".claude/agents/alpha.md",
        ".codex/agents/alpha.toml",
        ".gemini/agents/alpha.md",
        ".github/agents/alpha.agent.md",
        ".github/skills/alpha-plan/modules/shared.md",
    ];
    assert_eq!(written(&v), expected);
    for out in expected {
        assert!(read(root, out).contains("Shared text v3."), "{out}");
    }
    rules::validate_tree(root);
    let (code, v) = agents_json(root, &["sync"]);
    assert!(code == 0 && written(&v).is_empty(), "{v}");
}
