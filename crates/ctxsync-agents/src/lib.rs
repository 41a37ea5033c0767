//! Agent sync: turns an agent library (OpenAgentBuilder layout, Claude Code subagents)
//! into VS Code Copilot custom agents and prompt files, incrementally and atomically.
#![forbid(unsafe_code)]
