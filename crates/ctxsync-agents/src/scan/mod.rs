//! The scan stage: what the library holds and how its files reach each other.
//!
//! [`discover`] walks the sources and classifies files, [`parse`] reads one agent,
//! [`refs`] finds `@` references and links, [`graph`] resolves them into the dependency
//! graph, and [`index`] with [`noop`] answer "nothing changed" without a full run.

pub mod dirfd;
pub mod discover;
pub mod glob;
pub mod graph;
pub mod index;
pub mod noop;
pub mod parse;
pub mod refs;
pub mod yaml;
