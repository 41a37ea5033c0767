//! Agent sync: turns an agent library (OpenAgentBuilder layout, Claude Code subagents)
//! into VS Code Copilot custom agents and prompt files, incrementally and atomically.
//!
//! The pipeline for one run lives in [`sync`]: discover the library ([`discover`]),
//! parse agents ([`parse`]), resolve references ([`refs`], [`graph`]), render each
//! target ([`render`]), validate everything ([`validate`]) and only then deploy
//! atomically ([`deploy`]), remembering what was written in the [`registry`] and the
//! content-addressed [`backup`] store, and recording [`events`]. What a run is about to
//! change is journaled first ([`journal`]), so a run that dies half-way is accounted
//! for by the next.
#![forbid(unsafe_code)]

pub mod backup;
pub mod check;
pub mod config;
pub mod deploy;
pub mod dirfd;
pub mod discover;
pub mod error;
pub mod events;
pub mod fixrefs;
pub mod glob;
pub mod graph;
pub mod index;
pub mod journal;
pub mod merge3;
pub mod noop;
pub mod parse;
pub mod paths;
pub mod refs;
pub mod registry;
pub mod render;
pub mod rollback;
pub mod state;
pub mod sync;
pub mod synth;
pub mod validate;
pub mod watch;
pub mod yaml;

pub use config::{AgentsConfig, RefMode, Target};
pub use error::{Error, Result};
