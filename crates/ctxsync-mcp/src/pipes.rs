//! Wider stdio pipes for the MCP server.
//!
//! A client spawns `ctxsync mcp` with pipes, whose kernel buffer is 64 KiB on Linux. A
//! `pull` of a 100 KB context answers ~220 KB (the document as `structuredContent` and
//! again as its text copy), so the server's write blocks three or four times, each time
//! waiting for the client to be scheduled and drain the pipe: on two busy cores that was
//! most of the call's tail latency. Asking for a 1 MiB buffer (the default unprivileged
//! maximum) lets one answer go out in one write. Failure changes nothing: the pipe keeps
//! its size (and stdout may not be a pipe at all).

/// Largest buffer asked for (`/proc/sys/fs/pipe-max-size` is 1 MiB by default).
#[cfg(target_os = "linux")]
const WANTED: usize = 1024 * 1024;

/// Widens stdin's and stdout's pipe buffers where they are pipes.
pub fn widen_stdio() {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsFd;
        let stdout = std::io::stdout();
        let stdin = std::io::stdin();
        for (name, fd) in [("stdout", stdout.as_fd()), ("stdin", stdin.as_fd())] {
            match rustix::pipe::fcntl_setpipe_size(fd, WANTED) {
                Ok(size) => tracing::debug!(pipe = name, size, "pipe buffer widened"),
                Err(e) => tracing::debug!(pipe = name, error = %e, "pipe buffer left as it is"),
            }
        }
    }
}
