//! Incremental behaviour on small real libraries: dependency-driven re-rendering, removals,
//! hand edits (conflict, --force, --merge), rollback, renames, Claude Code subagents and
//! the safety rules.

#[path = "agents_common.rs"]
mod common;

use common::*;

fn inline_config(root: &std::path::Path) {
    write(
        root,
        "ctxsync.toml",
        "[other]\nx = 1\n\n[agents]\nreferences = \"inline\"\ntargets = [\"vscode-agent\", \"skills\", \"vscode-prompt\"]\n",
    );
}

#[test]
fn editing_a_module_rerenders_exactly_the_agents_that_reach_it() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    inline_config(root);
    small_library(root);
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(names(&v, "added"), ["alpha", "beta", "gamma"]);
    // Inline mode pulls the module text in, transitively (alpha -> task -> module).
    let alpha = read(root, ".github/agents/alpha.agent.md");
    assert!(alpha.contains("Shared text v1."), "{alpha}");
    assert!(alpha.contains("## Inlined: tasks/plan.md"));
    let beta_before = std::fs::metadata(root.join(".github/agents/beta.agent.md"))
        .unwrap()
        .modified()
        .unwrap();
    let gamma_before = mtimes(&root.join(".github/prompts"));

    // alpha reaches modules/shared.md only through tasks/plan.md.
    write(
        root,
        "agents/team/alpha/modules/shared.md",
        "# Shared\n\nShared text v2.\n",
    );
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(names(&v, "rendered"), ["alpha"]);
    assert_eq!(names(&v, "updated"), ["alpha"]);
    // In every target that carries the module's text: inlined in the agent, copied beside
    // the task's skill (whose SKILL.md only links it, so it is unchanged).
    assert_eq!(
        names(&v, "written"),
        [
            ".github/agents/alpha.agent.md",
            ".github/skills/alpha-plan/modules/shared.md"
        ]
    );
    assert!(read(root, ".github/agents/alpha.agent.md").contains("Shared text v2."));
    assert_eq!(
        std::fs::metadata(root.join(".github/agents/beta.agent.md"))
            .unwrap()
            .modified()
            .unwrap(),
        beta_before
    );
    assert_eq!(mtimes(&root.join(".github/prompts")), gamma_before);

    // beta's own module of the same name affects beta only.
    write(
        root,
        "agents/team/beta/modules/shared.md",
        "# Beta Shared\n\nBeta shared v2.\n",
    );
    let (_, v) = agents_json(root, &["sync"]);
    assert_eq!(names(&v, "rendered"), ["beta"]);

    let out = agents(root, &["log", "--last", "1"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("agent_updated"));
}

#[test]
fn deleting_an_agent_removes_exactly_its_outputs() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    small_library(root);
    write(
        root,
        "ctxsync.toml",
        "[agents]\ntargets = [\"vscode-agent\", \"skills\", \"vscode-prompt\"]\n",
    );
    write(
        root,
        ".github/agents/hand-written.agent.md",
        "---\nname: hand-written\ndescription: mine\n---\nmine\n",
    );
    assert_eq!(agents(root, &["sync"]).status.code(), Some(0));
    std::fs::remove_file(root.join("agents/team/gamma.md")).unwrap();
    // --check reports the orphans first, and writes nothing.
    let (code, v) = agents_json(root, &["sync", "--check"]);
    assert_eq!(code, 1);
    assert_eq!(
        names(&v, "deleted"),
        [
            ".github/agents/gamma.agent.md",
            ".github/prompts/gamma.prompt.md",
            ".github/skills/gamma/SKILL.md"
        ]
    );
    assert!(root.join(".github/agents/gamma.agent.md").exists());

    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(names(&v, "removed"), ["gamma"]);
    assert!(!root.join(".github/agents/gamma.agent.md").exists());
    assert!(!root.join(".github/prompts/gamma.prompt.md").exists());
    assert!(root.join(".github/agents/alpha.agent.md").exists());
    assert!(
        root.join(".github/agents/hand-written.agent.md").exists(),
        "not ours: never touched"
    );

    // The removed outputs are kept: rolling back brings them back byte for byte.
    let (code, v) = agents_json(root, &["rollback"]);
    assert_eq!(code, 0, "{v}");
    assert!(read(root, ".github/agents/gamma.agent.md").contains("Gamma reviews alone."));
}

#[test]
fn hand_edits_are_conflicts_until_force_or_merge() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    small_library(root);
    assert_eq!(agents(root, &["sync"]).status.code(), Some(0));
    let path = root.join(".github/agents/gamma.agent.md");
    let original = std::fs::read_to_string(&path).unwrap();
    let edited = original.replace("# Gamma Agent\n", "# Gamma Agent\n\nLocal note by hand.\n");
    std::fs::write(&path, &edited).unwrap();
    write(
        root,
        "agents/team/gamma.md",
        "# Gamma Agent\n\n## Purpose Statement\nGamma reviews alone.\n\n## Rules\nBe kind.\n",
    );

    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["conflicts"][0]["path"], ".github/agents/gamma.agent.md");
    assert_eq!(v["conflicts"][0]["resolution"], "left_alone");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        edited,
        "not overwritten"
    );
    let (code, _) = agents_json(root, &["sync"]);
    assert_eq!(code, 1, "the conflict is reported again");

    // --merge: both the hand edit and the new source text survive.
    let (code, v) = agents_json(root, &["sync", "--merge"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["conflicts"][0]["resolution"], "merged");
    let merged = std::fs::read_to_string(&path).unwrap();
    assert!(
        merged.contains("Local note by hand.") && merged.contains("Be kind."),
        "{merged}"
    );

    // Edit again, then --force: the source wins and the hand edit is kept as a backup.
    std::fs::write(&path, "garbage\n").unwrap();
    let (code, v) = agents_json(root, &["sync", "--force"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["conflicts"][0]["resolution"], "forced");
    assert!(std::fs::read_to_string(&path).unwrap().contains("Be kind."));
    assert!(!std::fs::read_to_string(&path)
        .unwrap()
        .contains("Local note by hand."));
    let (code, _) = agents_json(root, &["rollback"]);
    assert_eq!(code, 0);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "garbage\n",
        "rollback restores the forced-over bytes"
    );
}

#[test]
fn rollback_restores_previous_bytes_and_generations() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    small_library(root);
    let (_, v1) = agents_json(root, &["sync"]);
    assert_eq!(v1["generation"], 1);
    let gen1 = std::fs::read(root.join(".github/agents/gamma.agent.md")).unwrap();
    write(
        root,
        "agents/team/gamma.md",
        "# Gamma Agent\n\n## Purpose Statement\nGamma v2.\n",
    );
    let (_, v2) = agents_json(root, &["sync"]);
    assert_eq!(v2["generation"], 2);
    write(
        root,
        "agents/team/beta/beta.md",
        "# Beta Agent\n\n## Purpose Statement\nBeta v3.\n",
    );
    let (_, v3) = agents_json(root, &["sync"]);
    assert_eq!(v3["generation"], 3);
    let alpha_bytes = std::fs::read(root.join(".github/agents/alpha.agent.md")).unwrap();

    let (code, r) = agents_json(root, &["rollback", "--to", "1"]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["generation"], 4);
    assert_eq!(
        std::fs::read(root.join(".github/agents/gamma.agent.md")).unwrap(),
        gen1
    );
    assert!(read(root, ".github/agents/beta.agent.md").contains("Beta builds."));
    assert_eq!(
        std::fs::read(root.join(".github/agents/alpha.agent.md")).unwrap(),
        alpha_bytes
    );
    // Rolling back the rollback returns to generation 3's bytes.
    let (code, _) = agents_json(root, &["rollback"]);
    assert_eq!(code, 0);
    assert!(read(root, ".github/agents/beta.agent.md").contains("Beta v3."));
    let out = agents(root, &["rollback", "--to", "99"]);
    assert_eq!(out.status.code(), Some(2));
    let out = agents(root, &["log"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("rollback"));
}

#[test]
fn rename_in_one_batch_keeps_references_resolving() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    small_library(root);
    assert_eq!(agents(root, &["sync"]).status.code(), Some(0));
    std::fs::create_dir_all(root.join("agents/team/alpha/modules/perf")).unwrap();
    std::fs::rename(
        root.join("agents/team/alpha/modules/metrics.md"),
        root.join("agents/team/alpha/modules/perf/metrics.md"),
    )
    .unwrap();
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["renames"][0][0], "agents/team/alpha/modules/metrics.md");
    assert_eq!(
        v["renames"][0][1],
        "agents/team/alpha/modules/perf/metrics.md"
    );
    let alpha = read(root, ".github/agents/alpha.agent.md");
    assert!(
        alpha.contains("(../../agents/team/alpha/modules/perf/metrics.md#speed)"),
        "{alpha}"
    );

    let (code, c) = agents_json(root, &["check"]);
    assert_eq!(code, 0, "resolves through the rename: {c}");
    assert_eq!(c["via_rename"].as_array().unwrap().len(), 1);

    let (_, f) = agents_json(root, &["fix-refs"]);
    assert_eq!(f["proposals"][0]["new"], "@modules/perf/metrics.md#speed");
    assert!(
        read(root, "agents/team/alpha/alpha.md").contains("@modules/metrics.md#speed"),
        "not applied without --apply"
    );
    let (code, _) = agents_json(root, &["fix-refs", "--apply"]);
    assert_eq!(code, 0);
    assert!(read(root, "agents/team/alpha/alpha.md").contains("@modules/perf/metrics.md#speed"));
}

#[test]
fn fix_refs_finds_unique_file_name_in_agent_root() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    write(
        root,
        "agents/g/a/a.md",
        "# A\n\n- x: @modules/perf.md\n- y: @modules/nowhere.md\n",
    );
    write(root, "agents/g/a/modules/metrics/perf.md", "# Perf\n");
    let (code, c) = agents_json(root, &["check"]);
    assert_eq!(code, 1);
    assert_eq!(c["broken_files"].as_array().unwrap().len(), 2);
    let (_, f) = agents_json(root, &["fix-refs", "--apply"]);
    assert_eq!(f["proposals"].as_array().unwrap().len(), 1);
    assert_eq!(f["unresolved"], 1);
    assert!(read(root, "agents/g/a/a.md").contains("@modules/metrics/perf.md"));
    let (_, c) = agents_json(root, &["check"]);
    assert_eq!(c["broken_files"].as_array().unwrap().len(), 1);
}

#[test]
fn claude_code_subagents_produce_valid_vscode_outputs() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    write(root, ".claude/agents/code-reviewer.md", "---\nname: code-reviewer\ndescription: Reviews diffs for bugs: be strict.\ntools: Read, Grep, Glob\nmodel: sonnet\n---\nYou are a strict reviewer. See [guide](../../docs/guide.md).\n");
    write(root, ".claude/agents/team/test-runner.md", "---\nname: test-runner\ndescription: \"Runs tests, reports failures\"\ntools: [Bash, Read]\n---\nRun the tests.\n");
    write(root, "docs/guide.md", "# Guide\n");
    // By default VS Code lists `.claude/agents` itself: no second copy in .github/agents.
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(names(&v, "added"), ["code-reviewer", "test-runner"]);
    assert!(!root.join(".github/agents").exists(), "{v}");
    let status = agents(root, &["status"]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("duplicate_claude_agents"), "{status}");
    // Asked for, the copy is written, with tools and model mapped to VS Code's names.
    write(
        root,
        "ctxsync.toml",
        "[agents]\nduplicate_claude_agents = true\n",
    );
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    let text = read(root, ".github/agents/code-reviewer.agent.md");
    let body = text.split("\n---\n").nth(1).unwrap();
    let fm: serde_norway::Value = serde_norway::from_str(
        text.strip_prefix("---\n")
            .unwrap()
            .split("\n---\n")
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(fm["name"].as_str(), Some("code-reviewer"));
    assert_eq!(
        fm["description"].as_str(),
        Some("Reviews diffs for bugs: be strict.")
    );
    assert_eq!(fm["tools"][0].as_str(), Some("read"));
    assert_eq!(fm["tools"][1].as_str(), Some("search"));
    assert!(
        fm["tools"].get(2).is_none(),
        "Grep and Glob are both `search`"
    );
    assert_eq!(fm["model"].as_str(), Some("Claude Sonnet 4.5 (copilot)"));
    assert!(
        body.contains("[guide](../../docs/guide.md)"),
        "link rewritten for .github/agents: {body}"
    );
    let p = read(root, ".github/prompts/test-runner.prompt.md");
    assert!(p.contains("agent: test-runner"));
    // Enabling the Claude target never writes over the Claude sources themselves.
    write(
        root,
        "ctxsync.toml",
        "[agents]\nduplicate_claude_agents = true\ntargets = [\"vscode-agent\", \"vscode-prompt\", \"claude\"]\n",
    );
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    assert!(v["written"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| !p.as_str().unwrap().starts_with(".claude/")));
}

#[test]
fn unsafe_names_symlinks_and_oversized_files_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    small_library(root);
    write(
        root,
        ".claude/agents/evil.md",
        "---\nname: ../../x\ndescription: escape\n---\nbody\n",
    );
    let out = agents(root, &["sync"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("../../x") && err.contains("refused"), "{err}");
    assert!(
        !root.join(".github").exists(),
        "a run that fails validation writes nothing"
    );
    assert!(
        !root.join("x.agent.md").exists()
            && !d.path().parent().unwrap().join("x.agent.md").exists()
    );
    let log = agents(root, &["log"]);
    assert!(String::from_utf8_lossy(&log.stdout).contains("validation_failed"));
    std::fs::remove_file(root.join(".claude/agents/evil.md")).unwrap();

    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "secret.md", "# Secret\n\nTOP SECRET\n");
    #[cfg(unix)]
    std::os::unix::fs::symlink(
        outside.path().join("secret.md"),
        root.join("agents/team/secret.md"),
    )
    .unwrap();
    write(
        root,
        "agents/team/huge.md",
        &format!("# Huge\n{}", "x".repeat(2 * 1024 * 1024)),
    );
    let out = agents(root, &["sync"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("huge.md") && err.contains("refused"), "{err}");
    #[cfg(unix)]
    assert!(err.contains("not followed"), "{err}");
    assert!(!root.join(".github/agents/secret.agent.md").exists());
    assert!(!root.join(".github/agents/huge.agent.md").exists());
    let all: String = mtimes(&root.join(".github"))
        .iter()
        .map(|(p, _)| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(!all.contains("TOP SECRET"));
}

/// Issue 10, item 5: frontmatter nested tens of thousands of levels deep once kept the
/// YAML scanner busy for seconds per file. It is refused before parsing, as is
/// oversized frontmatter, each by file name in one run that goes on to check every
/// other agent; as for any invalid agent, nothing is written until they are fixed.
#[test]
fn deeply_nested_or_huge_frontmatter_is_that_agents_problem() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    small_library(root);
    write(
        root,
        "agents/team/bomb.md",
        &format!(
            "---\nname: bomb\ndescription: {}\n---\n# Bomb\n",
            "[".repeat(16_000)
        ),
    );
    write(
        root,
        ".claude/agents/curly.md",
        &format!(
            "---\nname: curly\ntools: {}\n---\nx\n",
            "{a: ".repeat(15_000)
        ),
    );
    write(
        root,
        ".claude/agents/huge.md",
        &format!(
            "---\nname: huge\ndescription: {}\n---\nx\n",
            "d".repeat(70_000)
        ),
    );
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 2, "{v}");
    let errors = names(&v, "validation_errors");
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors[0].starts_with(".claude/agents/curly.md: frontmatter nests"),
        "{errors:?}"
    );
    assert!(
        errors[1].starts_with(".claude/agents/huge.md: frontmatter is 70"),
        "{errors:?}"
    );
    assert!(
        errors[2]
            .starts_with("agents/team/bomb.md: frontmatter nests '[' or '{' more than 64 levels"),
        "{errors:?}"
    );
    // Every other agent was rendered in the same run.
    assert_eq!(names(&v, "rendered"), ["alpha", "beta", "gamma"], "{v}");
    assert!(!root.join(".github").exists(), "nothing written");
    for f in [
        "agents/team/bomb.md",
        ".claude/agents/curly.md",
        ".claude/agents/huge.md",
    ] {
        std::fs::remove_file(root.join(f)).unwrap();
    }
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(names(&v, "added"), ["alpha", "beta", "gamma"]);
}

/// Issue 10, item 9: a UTF-8 byte order mark before the frontmatter (or the title)
/// is skipped, not read as part of the first line.
#[test]
fn a_byte_order_mark_before_the_frontmatter_is_skipped() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    write(
        root,
        ".claude/agents/bom.md",
        "\u{feff}---\nname: bom-reviewer\ndescription: Reviews with a BOM.\ntools: Read\n---\nReview.\n",
    );
    write(
        root,
        "ctxsync.toml",
        "[agents]\nduplicate_claude_agents = true\n",
    );
    write(
        root,
        "agents/team/titled.md",
        "\u{feff}# Titled Agent\n\n## Purpose Statement\nTitled works.\n",
    );
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(names(&v, "added"), ["bom-reviewer", "titled"]);
    let text = read(root, ".github/agents/bom-reviewer.agent.md");
    assert!(
        text.starts_with(
            "---\nname: bom-reviewer\ndescription: Reviews with a BOM.\ntools:\n- read\n---\n"
        ),
        "{text}"
    );
    assert!(!text.contains('\u{feff}'), "{text}");
    let titled = read(root, ".github/agents/titled.agent.md");
    assert!(titled.contains("description: Titled works."), "{titled}");
    assert!(!titled.contains('\u{feff}'), "{titled}");
}

/// Issue 16, item 7: an agent whose inlined body would pass 30,000 characters links its
/// largest modules instead (reported), and only a body too big by itself fails.
#[test]
fn inline_mode_over_the_body_limit_links_the_largest_modules_instead() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    inline_config(root);
    write(
        root,
        "agents/g/big/big.md",
        "# Big\n\n@modules/a.md\n\n@modules/small.md\n",
    );
    write(
        root,
        "agents/g/big/modules/a.md",
        &format!("# A\n{}\n", "word ".repeat(7000)),
    );
    write(
        root,
        "agents/g/big/modules/small.md",
        "# Small\n\nInlined.\n",
    );
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    let text = read(root, ".github/agents/big.agent.md");
    assert!(text.chars().count() <= 30_000);
    assert!(
        text.contains("](../../agents/g/big/modules/a.md)"),
        "{text}"
    );
    assert!(text.contains("## Inlined: modules/small.md"), "{text}");
    let notes = v["notes"].as_array().unwrap();
    assert!(
        notes
            .iter()
            .any(|n| n.as_str().unwrap().contains("linked instead: modules/a.md")),
        "{v}"
    );

    // A body over the limit by itself cannot be fixed by linking: nothing is written.
    let e = tempfile::tempdir().unwrap();
    let root = e.path();
    inline_config(root);
    write(
        root,
        "agents/g/huge.md",
        &format!("# Huge\n{}\n", "word ".repeat(7000)),
    );
    let out = agents(root, &["sync"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("30000"));
    assert!(!root.join(".github").exists());
    let out = agents(root, &["sync", "--validate-only"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn usage_errors_exit_2() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "ctxsync.toml",
        "[agents]\nagents_dir = \"../outside\"\n",
    );
    let out = agents(d.path(), &["sync"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("agents_dir"));
    let out = agents(d.path(), &["sync", "--force", "--merge"]);
    assert_eq!(out.status.code(), Some(2));
}

/// With a context store in the project, every agent-sync run that writes a generation
/// leaves a summary in `technical_context.code_changes`; a no-op run leaves none.
#[test]
fn runs_that_write_are_summarised_in_the_shared_context() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    small_library(root);
    init_context(root);
    let (code, _) = agents_json(root, &["sync"]);
    assert_eq!(code, 0);
    let (code, _) = agents_json(root, &["sync"]);
    assert_eq!(code, 0);
    let changes = code_changes(root);
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0]["kind"], "agent_sync");
    assert_eq!(changes[0]["generation"], 1);
    assert_eq!(
        changes[0]["added"],
        serde_json::json!(["alpha", "beta", "gamma"])
    );
}
