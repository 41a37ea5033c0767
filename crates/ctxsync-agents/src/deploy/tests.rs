//! Tests of the atomic writes: temp files, staged folders, crash leftovers.

use super::*;
use crate::dirfd::Meta;

#[test]
fn syncfs_only_for_batches() {
    assert!(!use_syncfs(1));
    assert!(!use_syncfs(SYNCFS_WHEN_QUIET_FROM_FILES - 1));
    assert_eq!(use_syncfs(SYNCFS_FROM_FILES), cfg!(target_os = "linux"));
    if cfg!(target_os = "linux") {
        assert!(system_dirty_kb().is_some());
    }
}

#[test]
fn atomic_write_replaces_and_leaves_no_temp() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a/b.md");
    write_atomic(&p, b"one", true).unwrap();
    write_many(&[
        (p.clone(), &b"two"[..]),
        (d.path().join("a/c.md"), &b"three"[..]),
    ])
    .unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"two");
    let names: Vec<_> = std::fs::read_dir(d.path().join("a"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2);
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_new_folder_is_staged_beside_and_moved_in_whole() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join(".github/agents");
    let files: Vec<(PathBuf, &[u8])> = (0..70)
        .map(|i| (out.join(format!("a{i:02}.md")), &b"x"[..]))
        .collect();
    let batch = stage_many(&files).unwrap();
    // Staged, not visible: the destination does not exist until the commit.
    assert!(!out.exists());
    let staging = names(&d.path().join(".github"));
    assert_eq!(staging.len(), 1);
    assert!(staging[0].starts_with(TEMP_PREFIX), "{staging:?}");
    batch.flush().unwrap();
    let metas = batch.metas().to_vec();
    batch.commit().unwrap();
    assert_eq!(names(&d.path().join(".github")), vec!["agents"]);
    assert_eq!(names(&out).len(), 70);
    let m = std::fs::metadata(out.join("a05.md")).unwrap();
    assert_eq!(Meta::from_std(&m).mtime_ns, metas[5].mtime_ns);
    assert_eq!(m.len(), 1);
}

#[test]
fn stale_staging_folders_are_removed_and_live_ones_kept() {
    let d = tempfile::tempdir().unwrap();
    let parent = d.path().join(".github");
    // Left by a process that has ended (no such pid) and by this one (live).
    let stale = parent.join(format!("{TEMP_PREFIX}-4294967295-dir0-0"));
    let live = parent.join(format!("{TEMP_PREFIX}-{}-dir7-0", pid()));
    let other = parent.join(format!("{TEMP_PREFIX}-4294967295-0-3-0"));
    for dir in [&stale, &live] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("a.agent.md"), "x").unwrap();
    }
    std::fs::write(&other, "a temp file, not a staging folder").unwrap();
    write_many(&[(parent.join("agents/b.agent.md"), &b"b"[..])]).unwrap();
    assert!(!stale.exists());
    assert!(live.join("a.agent.md").exists());
    assert!(other.exists());
    assert_eq!(
        std::fs::read(parent.join("agents/b.agent.md")).unwrap(),
        b"b"
    );
}

#[test]
fn stale_temp_files_are_removed_and_live_or_foreign_ones_kept() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let stale = dir.join(format!("{TEMP_PREFIX}-4294967295-0-3-0"));
    let live = dir.join(format!("{TEMP_PREFIX}-{}-0-3-0", pid()));
    let random = dir.join(format!("{TEMP_PREFIX}AbC123"));
    let output = dir.join("a.agent.md");
    for f in [&stale, &live, &random, &output] {
        std::fs::write(f, "x").unwrap();
    }
    let stage = dir.join(format!("{TEMP_PREFIX}-4294967295-dir0-0"));
    std::fs::create_dir(&stage).unwrap();
    remove_stale_temps(dir);
    assert!(!stale.exists() && !stage.exists());
    assert!(live.exists() && random.exists() && output.exists());
}

#[test]
fn a_batch_dropped_before_commit_leaves_nothing() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("old")).unwrap();
    let files: Vec<(PathBuf, &[u8])> = vec![
        (d.path().join("new/a.md"), &b"a"[..]),
        (d.path().join("old/b.md"), &b"b"[..]),
    ];
    drop(stage_many(&files).unwrap());
    assert_eq!(names(d.path()), vec!["old"]);
    assert!(names(&d.path().join("old")).is_empty());
}

#[test]
fn a_folder_that_appears_while_staging_gets_the_files_one_by_one() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let files: Vec<(PathBuf, &[u8])> =
        vec![(out.join("a.md"), &b"a"[..]), (out.join("b.md"), &b"b"[..])];
    let batch = stage_many(&files).unwrap();
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("mine.md"), "someone else's").unwrap();
    batch.commit().unwrap();
    assert_eq!(names(&out), vec!["a.md", "b.md", "mine.md"]);
    assert_eq!(
        std::fs::read(out.join("mine.md")).unwrap(),
        b"someone else's"
    );
    assert_eq!(names(d.path()), vec!["out"]);
}

#[test]
fn new_nested_folders_are_staged_as_one_tree_per_folder_with_files() {
    let d = tempfile::tempdir().unwrap();
    let skills = d.path().join(".github/skills");
    let mut files: Vec<(PathBuf, &[u8])> = Vec::new();
    for i in 0..40 {
        let s = skills.join(format!("s{i:02}"));
        files.push((s.join("SKILL.md"), &b"skill"[..]));
        files.push((s.join("modules/core/m.md"), &b"module"[..]));
        files.push((s.join("tasks/t.md"), &b"task"[..]));
    }
    files.push((d.path().join(".github/agents/a.agent.md"), &b"agent"[..]));
    let batch = stage_many(&files).unwrap();
    // `.github` and `skills` hold no file of their own: made at once, empty; every
    // folder with files is staged out of sight (one staging tree per skill).
    assert_eq!(names(&d.path().join(".github")).len(), 2);
    let staged = names(&skills);
    assert_eq!(staged.len(), 40);
    assert!(
        staged.iter().all(|n| n.starts_with(TEMP_PREFIX)),
        "{staged:?}"
    );
    batch.flush().unwrap();
    let metas = batch.metas().to_vec();
    batch.commit().unwrap();
    assert_eq!(names(&d.path().join(".github")), vec!["agents", "skills"]);
    assert_eq!(names(&skills).len(), 40);
    assert_eq!(
        names(&skills.join("s07")),
        vec!["SKILL.md", "modules", "tasks"]
    );
    assert_eq!(
        std::fs::read(skills.join("s07/modules/core/m.md")).unwrap(),
        b"module"
    );
    let m = std::fs::metadata(skills.join("s07/tasks/t.md")).unwrap();
    assert_eq!(Meta::from_std(&m).mtime_ns, metas[7 * 3 + 2].mtime_ns);
}

#[test]
fn a_new_folder_below_an_existing_one_is_staged_beside_it() {
    let d = tempfile::tempdir().unwrap();
    let skill = d.path().join("skills/a");
    std::fs::create_dir_all(&skill).unwrap();
    let files: Vec<(PathBuf, &[u8])> = vec![
        (skill.join("SKILL.md"), &b"s"[..]),
        (skill.join("modules/x/m.md"), &b"m"[..]),
    ];
    let batch = stage_many(&files).unwrap();
    // `modules` holds no file itself, so it is made at once; `x` is staged.
    assert!(!skill.join("modules/x").exists());
    batch.commit().unwrap();
    assert_eq!(names(&skill), vec!["SKILL.md", "modules"]);
    assert_eq!(std::fs::read(skill.join("modules/x/m.md")).unwrap(), b"m");
}

#[test]
fn a_dropped_batch_removes_its_staged_trees() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("skills")).unwrap();
    let files: Vec<(PathBuf, &[u8])> = vec![
        (d.path().join("skills/a/SKILL.md"), &b"s"[..]),
        (d.path().join("skills/a/tasks/t.md"), &b"t"[..]),
    ];
    drop(stage_many(&files).unwrap());
    assert!(names(&d.path().join("skills")).is_empty());
}

#[test]
fn a_stale_staged_tree_is_removed_whole() {
    let d = tempfile::tempdir().unwrap();
    let parent = d.path().join("skills");
    let stale = parent.join(format!("{TEMP_PREFIX}-4294967295-dir3-0"));
    std::fs::create_dir_all(stale.join("modules/core")).unwrap();
    std::fs::write(stale.join("modules/core/m.md"), "x").unwrap();
    std::fs::write(stale.join("SKILL.md"), "x").unwrap();
    write_many(&[(parent.join("b/SKILL.md"), &b"b"[..])]).unwrap();
    assert_eq!(names(&parent), vec!["b"]);
}
