//! The process's file-descriptor limit (`RLIMIT_NOFILE`) and the connection cap it
//! allows.
//!
//! Every open connection is a descriptor; so are the store's database, WAL and shared
//! memory files of each pooled connection, the runtime's epoll and event fds, the agent
//! watcher's inotify handle and stdio. A cap at or above the soft limit would make
//! `accept` fail with `EMFILE` while the server is at the cap, and the store could fail
//! to open a file, so the cap is kept below the limit by a reserve.

/// Soft and hard `RLIMIT_NOFILE` (`None` = unlimited, or not a Unix system).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

/// The current limit.
#[cfg(unix)]
pub fn fd_limit() -> FdLimit {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    FdLimit {
        soft: limit.current,
        hard: limit.maximum,
    }
}

#[cfg(not(unix))]
pub fn fd_limit() -> FdLimit {
    FdLimit {
        soft: None,
        hard: None,
    }
}

/// Raises the soft limit to the hard one (an unprivileged process may), so the server
/// can hold as many connections as the system lets it. Returns the limit in force
/// afterwards; on failure the limit is left as it was.
#[cfg(unix)]
pub fn raise_fd_limit() -> std::io::Result<FdLimit> {
    use rustix::process::{setrlimit, Resource, Rlimit};
    let before = fd_limit();
    if before.soft == before.hard {
        return Ok(before);
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: before.hard,
            maximum: before.hard,
        },
    )?;
    Ok(fd_limit())
}

#[cfg(not(unix))]
pub fn raise_fd_limit() -> std::io::Result<FdLimit> {
    Ok(fd_limit())
}

/// Descriptors kept free of connections for the store, the runtime and the rest of the
/// process: an eighth of the limit, at least 32 and at most 512.
fn reserve(soft: u64) -> u64 {
    (soft / 8).clamp(32, 512)
}

/// The connection cap to use: `wanted`, lowered to what the soft limit leaves after the
/// reserve (at least 1).
pub fn connection_cap(wanted: usize, limit: FdLimit) -> usize {
    let wanted = wanted.max(1);
    match limit.soft {
        None => wanted,
        Some(soft) => {
            let allowed = soft.saturating_sub(reserve(soft)).max(1);
            wanted.min(usize::try_from(allowed).unwrap_or(usize::MAX))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_stays_below_the_soft_limit() {
        let limit = |soft| FdLimit {
            soft: Some(soft),
            hard: Some(1 << 20),
        };
        assert_eq!(connection_cap(4096, limit(1 << 20)), 4096);
        assert_eq!(connection_cap(4096, limit(1024)), 1024 - 128);
        assert_eq!(connection_cap(4096, limit(20_000)), 4096);
        assert_eq!(connection_cap(4096, limit(4096)), 4096 - 512);
        assert_eq!(connection_cap(100, limit(64)), 32);
        assert_eq!(connection_cap(100, limit(10)), 1);
        assert_eq!(connection_cap(0, limit(1024)), 1);
        let unlimited = FdLimit {
            soft: None,
            hard: None,
        };
        assert_eq!(connection_cap(4096, unlimited), 4096);
    }

    #[cfg(unix)]
    #[test]
    fn raising_reaches_the_hard_limit() {
        let after = raise_fd_limit().unwrap();
        assert_eq!(after.soft, after.hard);
        assert_eq!(fd_limit(), after);
    }
}
