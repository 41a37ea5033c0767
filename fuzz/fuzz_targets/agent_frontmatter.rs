//! Agent files as `agents sync` reads them: frontmatter split off, bounded and parsed
//! (`parse::parse_frontmatter`), then the OpenAgentBuilder conventions
//! (`parse::parse_agent`). Besides not crashing or hanging (run with `-timeout`), what is
//! accepted must hold what sync relies on: a mapping (or nothing) as frontmatter, and a
//! safe output name.
#![no_main]

use ctxsync_agents::parse::{self, MAX_FRONTMATTER_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The input as the text between the `---` lines.
    if let Ok(v) = parse::parse_frontmatter("agents/fuzz.md", text) {
        assert!(
            v.is_mapping() || v.is_null(),
            "accepted a non-mapping: {v:?}"
        );
        assert!(text.len() <= MAX_FRONTMATTER_BYTES);
    }
    // The input as a whole agent file.
    match parse::parse_agent("agents/fuzz/fuzz.md", text) {
        Ok(agent) => {
            assert!(
                ctxsync_agents::paths::is_safe_name(&agent.meta.name),
                "unsafe name accepted: {:?}",
                agent.meta.name
            );
            assert!(agent.meta.description.chars().count() <= 1024);
        }
        Err(e) => assert!(e.starts_with("agents/fuzz/fuzz.md: "), "{e}"),
    }
});
