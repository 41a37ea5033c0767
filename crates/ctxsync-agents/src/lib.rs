//! Agent sync: turns an agent library (OpenAgentBuilder layout, Claude Code subagents)
//! into the files each agent host reads (VS Code custom agents and prompt files, Agent
//! Skills, Claude Code, Codex and Gemini CLI agents), incrementally and atomically.
//!
//! The folders follow the pipeline of one run ([`sync`]):
//! * [`scan`]: walk the library ([`discover`]), parse agents ([`parse`]), resolve
//!   references ([`refs`], [`graph`]), and the scan index that answers no-op runs.
//! * [`render`]: an agent's body with its references turned into links or inlined text.
//! * [`targets`]: one module per host behind [`targets::HostTarget`] (the paths it owns,
//!   render, validate), plus the tool/model [`targets::mapping`] between hosts.
//! * [`deploy`]: atomic writes, the [`registry`] of what was written, the
//!   content-addressed [`backup`] store, the [`journal`] and [`rollback`].
//! * [`report`]: [`events`], reference integrity ([`check`]) and [`fixrefs`].
#![forbid(unsafe_code)]

pub mod config;
pub mod deploy;
pub mod error;
pub mod paths;
pub mod render;
pub mod report;
pub mod scan;
pub mod sync;
pub mod targets;

// The stage modules are re-exported at the root under their historical names, so
// `ctxsync_agents::registry` and friends keep working for the CLI and the tests.
pub use deploy::{backup, journal, merge3, registry, rollback, state};
pub use render::synth;
pub use report::{check, events, fixrefs};
pub use scan::{dirfd, discover, glob, graph, index, noop, parse, refs, yaml};
pub use sync::watch;
pub use targets::common as validate;

pub use config::{AgentsConfig, RefMode, Target};
pub use error::{Error, Result};
