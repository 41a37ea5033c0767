//! Tests of discovery: layouts, excludes, symlinks and the folder cache.

use super::*;

fn stats(lib: &Library) -> impl Iterator<Item = (&str, FileStat)> {
    lib.files.iter().map(|(p, st)| (p.as_str(), st.clone()))
}

/// Compares two scans: the files with their stats, the folders, the agents.
fn assert_same(got: &Library, want: &Library, what: &str) {
    assert_eq!(got.files, want.files, "{what}: files");
    assert_eq!(got.dirs, want.dirs, "{what}: folders");
    assert_eq!(got.agents, want.agents, "{what}: agents");
    assert_eq!(got.warnings, want.warnings, "{what}: warnings");
}

/// A walk that trusts a stat of the index for what did not move finds exactly what
/// a full walk finds, after each kind of change.
#[test]
fn a_trusting_walk_finds_what_a_full_walk_finds() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let cfg = AgentsConfig::default();
    let put = |rel: &str, text: &str| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    for g in ["g1", "g2"] {
        for a in ["a", "b"] {
            put(&format!("agents/{g}/{a}/{a}.md"), "# A\n");
            put(&format!("agents/{g}/{a}/modules/m.md"), "# M\n");
        }
        put(&format!("agents/{g}/single.md"), "# S\n");
    }
    type Change<'a> = Box<dyn Fn() + 'a>;
    let changes: Vec<(&str, Change<'_>)> = vec![
        ("nothing", Box::new(|| {})),
        (
            "a file rewritten",
            Box::new(|| put("agents/g1/a/modules/m.md", "# M changed\n")),
        ),
        (
            "a file added",
            Box::new(|| put("agents/g1/b/modules/new.md", "# N\n")),
        ),
        (
            "a file removed",
            Box::new(|| std::fs::remove_file(root.join("agents/g2/single.md")).unwrap()),
        ),
        (
            "a folder added",
            Box::new(|| put("agents/g3/c/c.md", "# C\n")),
        ),
        (
            "a folder removed",
            Box::new(|| std::fs::remove_dir_all(root.join("agents/g2/b")).unwrap()),
        ),
        (
            "a folder renamed",
            Box::new(|| {
                std::fs::rename(root.join("agents/g1/a"), root.join("agents/g1/z")).unwrap()
            }),
        ),
        #[cfg(unix)]
        (
            "a symlink added",
            Box::new(|| {
                std::os::unix::fs::symlink("../g1/b", root.join("agents/g2/link")).unwrap()
            }),
        ),
    ];
    for (what, change) in changes {
        // Entries must be older than the racy margin for the index to vouch for them.
        std::thread::sleep(std::time::Duration::from_millis(60));
        let before = discover(root, &cfg, &HashSet::new()).unwrap();
        let scanned_at = std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        change();
        let ix = crate::index::Index {
            scanned_at_ns: scanned_at,
            files: before
                .files
                .iter()
                .map(|(p, st)| {
                    (
                        p.clone(),
                        crate::registry::FileRec {
                            hash: String::new(),
                            size: st.size,
                            mtime_ns: st.mtime_ns,
                        },
                    )
                })
                .collect(),
            dirs: before.dirs.clone(),
            complete: true,
            ..Default::default()
        };
        let moved = crate::noop::stat_index(root, &cfg, &ix).expect("the index can answer");
        assert_eq!(moved.is_empty(), what == "nothing", "{what}: {moved:?}");
        let cache = DirCache::new(&ix.dirs, stats(&before), scanned_at).trusting(&moved);
        let trusted = discover_cached(root, &cfg, &HashSet::new(), Some(&cache), false).unwrap();
        let full = discover(root, &cfg, &HashSet::new()).unwrap();
        assert_same(&trusted, &full, what);
    }
}

fn write_agent(root: &Path, rel: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, "# Agent\n").unwrap();
}

#[test]
fn classifies_layouts() {
    let d = tempfile::tempdir().unwrap();
    let w = |p: &str| {
        let a = d.path().join(p);
        std::fs::create_dir_all(a.parent().unwrap()).unwrap();
        std::fs::write(a, "# x\n").unwrap();
    };
    w("agents/core/orch/orch.md");
    w("agents/core/orch/modules/m.md");
    w("agents/core/orch/orch-backup.md");
    w("agents/dev/be.md");
    w("agents/README.md");
    w(".claude/agents/rev.md");
    let lib = discover(d.path(), &AgentsConfig::default(), &HashSet::new()).unwrap();
    let entries: Vec<_> = lib.agents.iter().map(|a| a.entry.as_str()).collect();
    assert_eq!(
        entries,
        [
            ".claude/agents/rev.md",
            "agents/core/orch/orch.md",
            "agents/dev/be.md"
        ]
    );
    assert_eq!(
        lib.root_of("agents/core/orch/modules/m.md"),
        "agents/core/orch"
    );
    assert!(!lib.files.contains_key("agents/core/orch/orch-backup.md"));
}

/// A modular agent's folder renamed away from `<folder>.md`: its main file stays the
/// one agent, rooted where it was; nothing in `modules/`, `tasks/` or `checklists/`
/// (anywhere below a source) becomes an agent; a support folder without an agent
/// file beside it is reported.
#[test]
fn support_folders_never_become_agents() {
    let d = tempfile::tempdir().unwrap();
    let w = |p: &str| write_agent(d.path(), p);
    w("agents/core/orch-v2/orch.md");
    w("agents/core/orch-v2/modules/capabilities/c.md");
    w("agents/core/orch-v2/modules/README.md");
    w("agents/core/orch-v2/tasks/t.md");
    w("agents/core/orch-v2/checklists/q.md");
    // A file named like its folder inside a support folder is no modular agent.
    w("agents/core/orch-v2/modules/modules.md");
    // Main file gone: reported, nothing published.
    w("agents/core/headless/tasks/t.md");
    w("agents/core/headless/modules/m.md");
    // Single-file agents sharing their group's tasks.
    w("agents/dev/be.md");
    w("agents/dev/fe.md");
    w("agents/dev/tasks/shared.md");
    // A source whose own path names a support folder.
    w("docs/tasks/helper.md");
    let cfg = AgentsConfig {
        sources: vec!["agents".into(), "docs/tasks/".into()],
        ..AgentsConfig::default()
    };
    let lib = discover(d.path(), &cfg, &HashSet::new()).unwrap();
    let entries: Vec<(&str, &str)> = lib
        .agents
        .iter()
        .map(|a| (a.entry.as_str(), a.root.as_str()))
        .collect();
    assert_eq!(
        entries,
        [
            ("agents/core/orch-v2/orch.md", "agents/core/orch-v2"),
            ("agents/dev/be.md", "agents/dev"),
            ("agents/dev/fe.md", "agents/dev"),
            ("docs/tasks/helper.md", "docs/tasks"),
        ]
    );
    for (f, root) in [
        (
            "agents/core/orch-v2/modules/capabilities/c.md",
            "agents/core/orch-v2",
        ),
        ("agents/core/orch-v2/tasks/t.md", "agents/core/orch-v2"),
        ("agents/dev/tasks/shared.md", "agents/dev"),
    ] {
        assert_eq!(lib.root_of(f), root, "{f}");
        assert!(lib.is_support(f), "{f}");
    }
    assert!(!lib.is_support("agents/core/orch-v2/modules/README.md"));
    assert!(!lib.is_support("agents/dev/be.md"));
    assert!(lib.modular_roots.is_empty(), "{:?}", lib.modular_roots);
    assert_eq!(
        lib.warnings,
        [
            "agents/core/headless: holds modules/, tasks/ or checklists/ but no agent file \
          (expected agents/core/headless/headless.md); its 2 support files are not published"
        ]
    );
}

#[cfg(unix)]
#[test]
fn symlink_out_of_library_not_followed() {
    let d = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.md"), "# s\n").unwrap();
    std::fs::create_dir_all(d.path().join("agents")).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret.md"),
        d.path().join("agents/s.md"),
    )
    .unwrap();
    let lib = discover(d.path(), &AgentsConfig::default(), &HashSet::new()).unwrap();
    assert!(lib.files.is_empty());
    assert!(lib.warnings.iter().any(|w| w.contains("not followed")));
}

#[test]
fn a_first_scan_reads_and_hashes_what_it_lists() {
    let d = tempfile::tempdir().unwrap();
    write_agent(d.path(), "agents/a/a.md");
    std::fs::write(d.path().join("agents/a/latin1.md"), b"caf\xe9\n").unwrap();
    std::fs::write(d.path().join("agents/big.md"), "x".repeat(100)).unwrap();
    let cfg = AgentsConfig {
        max_file_bytes: 50,
        ..AgentsConfig::default()
    };
    let lib = discover_cached(d.path(), &cfg, &HashSet::new(), None, true).unwrap();
    let read: BTreeMap<&str, &ReadFile> = lib.read.iter().map(|(p, r)| (p.as_str(), r)).collect();
    assert_eq!(
        read.keys().copied().collect::<Vec<_>>(),
        vec!["agents/a/a.md", "agents/a/latin1.md"]
    );
    let text = std::fs::read(d.path().join("agents/a/a.md")).unwrap();
    assert_eq!(read["agents/a/a.md"].hash, crate::backup::hash(&text));
    assert_eq!(
        read["agents/a/a.md"].text.as_deref().map(str::as_bytes),
        Some(&text[..])
    );
    assert!(read["agents/a/latin1.md"].text.is_none());
    // Too large: refused with a warning, not read, and its folder listed every time.
    assert!(!lib.files.contains_key("agents/big.md"));
    assert!(lib.warnings.iter().any(|w| w.contains("agents/big.md")));
    assert_eq!(lib.dirs["agents"], ALWAYS_LIST);
    // The same files and stats as a scan that does not read.
    let listed = discover(d.path(), &cfg, &HashSet::new()).unwrap();
    assert_eq!(listed.files, lib.files);
    assert!(listed.read.is_empty());
}

#[test]
fn unchanged_folders_reuse_their_listing_and_changed_ones_are_listed() {
    let d = tempfile::tempdir().unwrap();
    let write = |rel: &str| write_agent(d.path(), rel);
    write("agents/a/a.md");
    write("agents/b/b.md");
    let cfg = AgentsConfig::default();
    let first = discover(d.path(), &cfg, &HashSet::new()).unwrap();
    assert!(first.dirs.contains_key("agents/b"), "{:?}", first.dirs);
    // A cache that (wrongly) lacks b.md proves the listing of an unchanged folder is
    // reused rather than read again.
    let files: Vec<(&str, FileStat)> = first
        .files
        .iter()
        .filter(|(f, _)| *f != "agents/b/b.md")
        .map(|(f, st)| (f.as_str(), st.clone()))
        .collect();
    let later = u64::MAX / 2;
    let cache = DirCache::new(&first.dirs, files.iter().cloned(), later);
    let cached = discover_cached(d.path(), &cfg, &HashSet::new(), Some(&cache), false).unwrap();
    assert!(cached.files.contains_key("agents/a/a.md"));
    assert!(!cached.files.contains_key("agents/b/b.md"));
    // A folder that changed is listed again: its new and old files both appear, and
    // so does a new sub-folder of an unchanged-looking parent once the parent moved.
    std::thread::sleep(std::time::Duration::from_millis(20));
    write("agents/b/c.md");
    write("agents/new/new.md");
    let again = discover_cached(d.path(), &cfg, &HashSet::new(), Some(&cache), false).unwrap();
    for f in [
        "agents/a/a.md",
        "agents/b/b.md",
        "agents/b/c.md",
        "agents/new/new.md",
    ] {
        assert!(
            again.files.contains_key(f),
            "{f} missing: {:?}",
            again.files.keys()
        );
    }
    // A folder modified close to the scan is never trusted ("racy clean").
    let racy = DirCache::new(&first.dirs, files.iter().cloned(), 0);
    let listed = discover_cached(d.path(), &cfg, &HashSet::new(), Some(&racy), false).unwrap();
    assert!(listed.files.contains_key("agents/b/b.md"));
}

/// A folder holding a symlink is listed on every scan, and the reused listing of
/// its parent must still lead to it (an earlier version lost its agents on the
/// third run, and never saw a file added to it).
#[cfg(unix)]
#[test]
fn a_folder_holding_a_link_stays_reachable_from_a_cached_parent() {
    let d = tempfile::tempdir().unwrap();
    let write = |rel: &str| write_agent(d.path(), rel);
    write("agents/g/a/a.md");
    write("agents/h/b.md");
    std::fs::create_dir_all(d.path().join("agents/u")).unwrap();
    std::os::unix::fs::symlink("../h/b.md", d.path().join("agents/g/linked.md")).unwrap();
    std::os::unix::fs::symlink("../h/b.md", d.path().join("agents/u/only-a-link.md")).unwrap();
    let cfg = AgentsConfig::default();
    let first = discover(d.path(), &cfg, &HashSet::new()).unwrap();
    assert_eq!(first.dirs.get("agents/g"), Some(&ALWAYS_LIST));
    let later = u64::MAX / 2;
    let cache = DirCache::new(&first.dirs, stats(&first), later);
    let again = discover_cached(d.path(), &cfg, &HashSet::new(), Some(&cache), false).unwrap();
    assert_eq!(
        again.files.keys().collect::<Vec<_>>(),
        first.files.keys().collect::<Vec<_>>()
    );
    // A file added to the always-listed folder changes only that folder's mtime.
    write("agents/u/new.md");
    let third = discover_cached(d.path(), &cfg, &HashSet::new(), Some(&cache), false).unwrap();
    assert!(
        third.files.contains_key("agents/u/new.md"),
        "{:?}",
        third.files.keys()
    );
    assert!(third.files.contains_key("agents/g/a/a.md"));
}
