//! `ctxsync setup CLIENT` and `ctxsync setup --check` as real processes: the files each
//! client reads are parsed in that client's own format, merged into existing
//! configurations without losing other servers, keys or comments, left byte-identical by
//! a second run, untouched by `--dry-run` and refused (unchanged) when malformed.

mod support;

use std::path::Path;
use std::process::Output;

use serde_json::{json, Value};
use support::{Mode, Project};

const CLIENTS: [&str; 5] = ["claude", "vscode", "codex", "cursor", "gemini"];

fn config_file(client: &str) -> &'static str {
    match client {
        "claude" => ".mcp.json",
        "vscode" => ".vscode/mcp.json",
        "codex" => ".codex/config.toml",
        "cursor" => ".cursor/mcp.json",
        "gemini" => ".gemini/settings.json",
        other => panic!("unknown client {other}"),
    }
}

fn bin_path() -> String {
    assert_cmd::cargo::cargo_bin("ctxsync")
        .canonicalize()
        .expect("binary path")
        .to_str()
        .expect("UTF-8 path")
        .to_owned()
}

/// A project whose PATH has no ctxsync on it (so setup writes the absolute path).
fn setup(p: &Project, args: &[&str]) -> Output {
    p.cmd(&[&["setup"], args].concat())
        .env("PATH", "/usr/bin:/bin")
        .output()
        .expect("run ctxsync setup")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed ({:?}): {}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn read(p: &Project, rel: &str) -> String {
    std::fs::read_to_string(p.path().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn write(p: &Project, rel: &str, text: &str) {
    let path = p.path().join(rel);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

/// The file parsed the way its client parses it.
fn parse(client: &str, text: &str) -> Value {
    match client {
        // Claude Code and Cursor read plain JSON.
        "claude" | "cursor" => serde_json::from_str(text).expect("valid JSON"),
        // VS Code and Gemini CLI read JSON with comments (and trailing commas).
        "vscode" | "gemini" => {
            jsonc_parser::cst::CstRootNode::parse(text, &jsonc_parser::ParseOptions::default())
                .expect("valid JSONC")
                .to_serde_value()
                .expect("a value")
        }
        "codex" => {
            let table: toml::Table = toml::from_str(text).expect("valid TOML");
            serde_json::to_value(table).expect("as JSON")
        }
        other => panic!("unknown client {other}"),
    }
}

/// ctxsync's entry in the parsed file.
fn entry<'a>(client: &str, value: &'a Value) -> &'a Value {
    let outer = match client {
        "vscode" => "servers",
        "codex" => "mcp_servers",
        _ => "mcpServers",
    };
    &value[outer]["ctxsync"]
}

#[test]
fn every_client_gets_a_file_its_own_format_accepts() {
    let p = Project::new(Mode::Embedded);
    p.init();
    let bin = bin_path();
    for client in CLIENTS {
        let out = ok(&setup(&p, &[client, "--agent", "builder"]));
        let rel = config_file(client);
        assert!(out.contains(&format!("{rel}: created")), "{out}");
        let value = parse(client, &read(&p, rel));
        let e = entry(client, &value);
        assert_eq!(e["command"], json!(bin), "{client}: {value}");
        assert_eq!(e["args"], json!(["mcp", "--agent", "builder"]), "{client}");
        match client {
            "claude" | "vscode" => assert_eq!(e["type"], "stdio", "{client}"),
            _ => assert!(e.get("type").is_none(), "{client}: {e}"),
        }
    }
    // Claude Code's hooks, in the shape its settings document.
    let settings: Value = serde_json::from_str(&read(&p, ".claude/settings.json")).unwrap();
    let command = |event: &str| settings["hooks"][event][0]["hooks"][0]["command"].clone();
    assert_eq!(
        command("SessionStart"),
        json!(format!("{bin} session start --agent builder"))
    );
    assert_eq!(
        command("UserPromptSubmit"),
        json!(format!("{bin} hook --agent builder"))
    );
    assert_eq!(command("PostToolUse"), command("UserPromptSubmit"));
    assert_eq!(settings["hooks"]["PostToolUse"][0]["matcher"], "*");
    assert_eq!(
        settings["hooks"]["UserPromptSubmit"][0]["hooks"][0]["type"],
        "command"
    );
    assert!(settings["hooks"]["UserPromptSubmit"][0]
        .get("matcher")
        .is_none());
}

#[test]
fn generated_files_snapshot() {
    let p = Project::new(Mode::Embedded);
    let bin = bin_path();
    for client in CLIENTS {
        ok(&setup(&p, &[client, "--agent", "builder"]));
    }
    for rel in CLIENTS
        .iter()
        .map(|c| config_file(c))
        .chain([".claude/settings.json"])
    {
        let text = read(&p, rel).replace(&bin, "<ctxsync>");
        insta::assert_snapshot!(rel.trim_start_matches('.').replace('/', "_"), text);
    }
}

#[test]
fn ctxsync_on_path_is_written_as_ctxsync() {
    let p = Project::new(Mode::Embedded);
    let bin = bin_path();
    let dir = Path::new(&bin)
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let out = p
        .cmd(&["setup", "claude"])
        .env("PATH", format!("{dir}:/usr/bin:/bin"))
        .output()
        .unwrap();
    ok(&out);
    let mcp: Value = serde_json::from_str(&read(&p, ".mcp.json")).unwrap();
    assert_eq!(mcp["mcpServers"]["ctxsync"]["command"], "ctxsync");
    let settings: Value = serde_json::from_str(&read(&p, ".claude/settings.json")).unwrap();
    assert_eq!(
        settings["hooks"]["UserPromptSubmit"][0]["hooks"][0]["command"],
        "ctxsync hook"
    );
}

/// An existing configuration of each client, with another server, other keys and (where
/// the format has them) comments.
fn existing(client: &str) -> &'static str {
    match client {
        "claude" => "{\n  \"mcpServers\": {\n    \"github\": {\"command\": \"gh-mcp\", \"args\": []}\n  },\n  \"other\": true\n}\n",
        "cursor" => "{\"mcpServers\":{\"github\":{\"command\":\"gh-mcp\"}},\"other\":true}",
        "vscode" => "{\n  // team servers\n  \"inputs\": [],\n  \"servers\": {\n    \"github\": {\"type\": \"http\", \"url\": \"https://example.invalid/mcp\"}, // remote\n  },\n  \"other\": true,\n}\n",
        "gemini" => "{\n  /* theme and servers */\n  \"theme\": \"GitHub\",\n  \"mcpServers\": {\n    // the usual one\n    \"github\": {\"command\": \"gh-mcp\"}\n  },\n  \"other\": true\n}\n",
        "codex" => "# my codex config\nmodel = \"o3\"\nother = true\n\n[mcp_servers.github] # the usual one\ncommand = \"gh-mcp\"\nargs = []\n\n[profiles.fast]\nmodel = \"o4-mini\"\n",
        other => panic!("unknown client {other}"),
    }
}

#[test]
fn merging_keeps_other_servers_keys_and_comments() {
    let p = Project::new(Mode::Embedded);
    for client in CLIENTS {
        let rel = config_file(client);
        write(&p, rel, existing(client));
        let out = ok(&setup(&p, &[client]));
        assert!(out.contains(&format!("{rel}: updated")), "{out}");
        let text = read(&p, rel);
        let value = parse(client, &text);
        assert_eq!(value["other"], true, "{client}: {text}");
        assert!(
            entry(client, &value)["command"].is_string(),
            "{client}: {text}"
        );
        let github = match client {
            "vscode" => &value["servers"]["github"],
            "codex" => &value["mcp_servers"]["github"],
            _ => &value["mcpServers"]["github"],
        };
        assert!(github.is_object(), "{client} lost the other server: {text}");
        for comment in [
            "// team servers",
            "// remote",
            "/* theme and servers */",
            "// the usual one",
            "# my codex config",
        ] {
            if existing(client).contains(comment) {
                assert!(text.contains(comment), "{client} lost {comment:?}: {text}");
            }
        }
        if client == "codex" {
            assert!(value["profiles"]["fast"]["model"] == "o4-mini", "{text}");
        }
    }
}

#[test]
fn claude_hooks_merge_with_other_hooks_and_replace_an_old_ctxsync_hook() {
    let p = Project::new(Mode::Embedded);
    let settings = json!({
        "permissions": {"allow": ["Bash(cargo test:*)"]},
        "hooks": {
            "PostToolUse": [
                {"matcher": "Write|Edit", "hooks": [{"type": "command", "command": "cargo fmt"}]},
                {"matcher": "*", "hooks": [{"type": "command", "command": "/old/bin/ctxsync hook --agent old", "timeout": 10}]}
            ],
            "Stop": [{"hooks": [{"type": "command", "command": "notify-send done"}]}]
        }
    });
    write(
        &p,
        ".claude/settings.json",
        &serde_json::to_string_pretty(&settings).unwrap(),
    );
    ok(&setup(&p, &["claude", "--agent", "builder"]));
    let after: Value = serde_json::from_str(&read(&p, ".claude/settings.json")).unwrap();
    let bin = bin_path();
    assert_eq!(after["permissions"], settings["permissions"]);
    assert_eq!(after["hooks"]["Stop"], settings["hooks"]["Stop"]);
    let post = after["hooks"]["PostToolUse"].as_array().unwrap();
    assert_eq!(
        post.len(),
        2,
        "the old ctxsync hook is updated, not doubled: {post:?}"
    );
    assert_eq!(post[0], settings["hooks"]["PostToolUse"][0]);
    assert_eq!(
        post[1]["hooks"][0]["command"],
        json!(format!("{bin} hook --agent builder"))
    );
    assert_eq!(
        after["hooks"]["UserPromptSubmit"].as_array().unwrap().len(),
        1
    );
    assert_eq!(after["hooks"]["SessionStart"].as_array().unwrap().len(), 1);
}

#[test]
fn a_second_run_changes_nothing_and_says_so() {
    let p = Project::new(Mode::Embedded);
    for client in CLIENTS {
        let rel = config_file(client);
        write(&p, rel, existing(client));
        ok(&setup(&p, &[client, "--agent", "builder"]));
        let first = std::fs::read(p.path().join(rel)).unwrap();
        let hooks_first = std::fs::read(p.path().join(".claude/settings.json")).ok();
        let out = ok(&setup(&p, &[client, "--agent", "builder"]));
        assert_eq!(
            std::fs::read(p.path().join(rel)).unwrap(),
            first,
            "{client}"
        );
        assert_eq!(
            std::fs::read(p.path().join(".claude/settings.json")).ok(),
            hooks_first
        );
        assert!(out.contains(&format!("{rel}: unchanged")), "{out}");
        assert!(out.contains("nothing changed"), "{out}");
        assert!(
            !out.contains("updated") && !out.contains("created"),
            "{out}"
        );
    }
}

#[test]
fn dry_run_shows_a_diff_and_writes_nothing() {
    let p = Project::new(Mode::Embedded);
    for client in CLIENTS {
        let rel = config_file(client);
        write(&p, rel, existing(client));
        let out = ok(&setup(&p, &[client, "--dry-run", "--agent", "builder"]));
        assert_eq!(read(&p, rel), existing(client), "{client} was written");
        assert!(
            out.contains(&format!("--- a/{rel}\n+++ b/{rel}\n")),
            "{out}"
        );
        assert!(out.contains("@@ "), "{out}");
        assert!(
            out.lines()
                .any(|l| l.starts_with('+') && l.contains("--agent")
                    || l.starts_with('+') && l.contains("builder")),
            "{out}"
        );
        assert!(out.contains("dry run, nothing written"), "{out}");
    }
    // Files that do not exist yet are shown as new, and not created.
    let fresh = Project::new(Mode::Embedded);
    let out = ok(&setup(&fresh, &["claude", "--dry-run"]));
    assert!(out.contains("--- /dev/null\n+++ b/.mcp.json\n"), "{out}");
    assert!(out.contains("+++ b/.claude/settings.json\n"), "{out}");
    assert!(!fresh.path().join(".mcp.json").exists());
    assert!(!fresh.path().join(".claude").exists());
}

#[test]
fn malformed_files_are_refused_and_left_as_they_were() {
    let cases = [
        (
            "claude",
            ".mcp.json",
            "{\n  \"mcpServers\": {\n    \"a\": 1,\n  }\n}\n",
            "line 4",
        ),
        (
            "cursor",
            ".cursor/mcp.json",
            "{\"mcpServers\": {\n// comment\n}}",
            "line 2",
        ),
        (
            "vscode",
            ".vscode/mcp.json",
            "{\n  \"servers\": {\n    \"a\": {\n  }\n",
            "line",
        ),
        (
            "gemini",
            ".gemini/settings.json",
            "{\n  \"mcpServers\": [1, 2]\n}\n",
            "mcpServers",
        ),
        (
            "codex",
            ".codex/config.toml",
            "model = \"o3\"\n[mcp_servers.ctxsync\ncommand = 1\n",
            "line 2",
        ),
    ];
    for (client, rel, text, locator) in cases {
        let p = Project::new(Mode::Embedded);
        write(&p, rel, text);
        let out = setup(&p, &[client]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{client}: {stderr}");
        assert!(
            stderr.contains(rel) && stderr.contains(locator),
            "{client}: {stderr}"
        );
        assert_eq!(read(&p, rel), text, "{client}: the file was changed");
        assert!(out.stdout.is_empty(), "{client}");
        let leftovers: Vec<_> = std::fs::read_dir(p.path().join(rel).parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{client}: {leftovers:?}");
    }
    // A malformed settings.json stops Claude's setup before .mcp.json is written.
    let p = Project::new(Mode::Embedded);
    write(
        &p,
        ".claude/settings.json",
        "{\"hooks\": {\"PostToolUse\": {}}}",
    );
    let out = setup(&p, &["claude"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("hooks.PostToolUse"));
    assert!(!p.path().join(".mcp.json").exists());
}

#[test]
fn check_tells_configured_stale_and_absent() {
    let p = Project::new(Mode::Embedded);
    let check = |args: &[&str]| setup(&p, &[&["--check"], args].concat());
    // Nothing configured: every client absent, exit 1.
    let out = check(&[]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for client in CLIENTS {
        assert!(
            text.lines()
                .any(|l| l.starts_with(client) && l.contains("absent")),
            "{text}"
        );
    }
    ok(&setup(&p, &["claude", "--agent", "builder"]));
    ok(&setup(&p, &["codex"]));
    let text = ok(&check(&[]));
    assert!(
        text.lines().any(|l| l.starts_with("claude")
            && l.contains(" configured")
            && l.contains("agent builder")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("codex") && l.contains(" configured")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("cursor") && l.contains("absent")),
        "{text}"
    );
    ok(&check(&["claude"]));
    assert_eq!(check(&["cursor"]).status.code(), Some(1));
    // With --agent, another agent's entry does not count.
    assert_eq!(
        check(&["claude", "--agent", "planner"]).status.code(),
        Some(1)
    );
    // Another binary: stale, exit 1, and setup puts it right.
    let rel = ".codex/config.toml";
    write(&p, rel, &read(&p, rel).replace(&bin_path(), "/old/ctxsync"));
    let out = check(&[]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.lines()
            .any(|l| l.starts_with("codex") && l.contains("stale") && l.contains("/old/ctxsync")),
        "{text}"
    );
    ok(&setup(&p, &["codex"]));
    ok(&check(&[]));
    // A hook removed by hand: claude is stale.
    let settings = read(&p, ".claude/settings.json");
    let mut value: Value = serde_json::from_str(&settings).unwrap();
    value["hooks"]
        .as_object_mut()
        .unwrap()
        .remove("PostToolUse");
    write(&p, ".claude/settings.json", &value.to_string());
    let out = check(&["claude"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no ctxsync hook for PostToolUse"));
    // A malformed file is reported, not a crash.
    write(&p, ".cursor/mcp.json", "{oops");
    let out = check(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("invalid"));
}

#[test]
fn remote_mode_writes_no_secret() {
    let p = Project::new(Mode::Embedded);
    let secret = "cs_very-secret-token-value";
    for client in CLIENTS {
        let out = p
            .cmd(&["setup", client])
            .env("PATH", "/usr/bin:/bin")
            .env("CTXSYNC_SERVER", "http://127.0.0.1:9")
            .env("CTXSYNC_TOKEN", secret)
            .output()
            .unwrap();
        ok(&out);
    }
    for rel in CLIENTS
        .iter()
        .map(|c| config_file(c))
        .chain([".claude/settings.json"])
    {
        let text = read(&p, rel);
        assert!(
            !text.contains(secret) && !text.contains("127.0.0.1:9"),
            "{rel}: {text}"
        );
    }
    // Clients that filter the environment are told the variables' names.
    let codex = parse("codex", &read(&p, ".codex/config.toml"));
    assert_eq!(
        entry("codex", &codex)["env_vars"],
        json!(["CTXSYNC_SERVER", "CTXSYNC_TOKEN"])
    );
    let gemini = parse("gemini", &read(&p, ".gemini/settings.json"));
    assert_eq!(
        entry("gemini", &gemini)["env"],
        json!({"CTXSYNC_SERVER": "$CTXSYNC_SERVER", "CTXSYNC_TOKEN": "$CTXSYNC_TOKEN"})
    );
}

#[test]
fn bad_arguments_are_input_errors() {
    let p = Project::new(Mode::Embedded);
    let out = setup(&p, &["claude", "--agent", "no spaces"]);
    assert_eq!(out.status.code(), Some(2));
    let out = setup(&p, &["emacs"]);
    assert_eq!(out.status.code(), Some(2));
    let out = setup(&p, &[]);
    assert_eq!(out.status.code(), Some(2));
    let missing = p.path().join("no-such-folder");
    let out = setup(&p, &["claude", "-C", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!missing.exists());
    assert!(!p.path().join(".mcp.json").exists());
}
