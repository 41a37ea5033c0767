//! Everything the CLI prints goes through here, so that a reader that goes away
//! (`ctxsync status | head -1`) ends the command quietly instead of panicking.
//!
//! Rust ignores SIGPIPE, so a write to a closed pipe fails with `BrokenPipe`, and
//! `println!` panics on that. [`outln!`] and [`out!`] write to standard output through
//! [`stdout`]: a broken pipe exits with code 0 at once (as ripgrep does: the reader
//! has all it wanted; anything the command changed is already committed, since output
//! comes after the work), any other write failure (a full disk under `> file`) is
//! reported on stderr and exits 3. [`errln!`] writes diagnostics to standard error and
//! ignores failures there, since there is nobody left to tell.

use std::io::{self, Write};

/// Exit code for a standard output that could not be written for another reason than a
/// closed pipe: the file system failed.
const WRITE_FAILED: i32 = 3;

/// Standard output, locked for as long as the guard lives; see the module doc.
pub struct Stdout(io::StdoutLock<'static>);

pub fn stdout() -> Stdout {
    Stdout(io::stdout().lock())
}

/// Ends the process for a failed write to standard output.
fn give_up(e: &io::Error) -> ! {
    if e.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    let _ = writeln!(io::stderr(), "error: cannot write to standard output: {e}");
    std::process::exit(WRITE_FAILED);
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf).or_else(|e| {
            if e.kind() == io::ErrorKind::Interrupted {
                Err(e)
            } else {
                give_up(&e)
            }
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush().or_else(|e| give_up(&e))
    }
}

impl Drop for Stdout {
    fn drop(&mut self) {
        // Surface a broken pipe now, not in the runtime's silent flush at exit, so the
        // exit code is decided here.
        let _ = self.flush();
    }
}

/// Writes formatted text to standard output (see the module doc for failures).
pub fn write_fmt(args: std::fmt::Arguments<'_>) {
    let mut out = stdout();
    // `Stdout` ends the process on any failure but `Interrupted`, which `write_fmt`
    // retries itself.
    let _ = out.write_fmt(args);
}

/// Writes formatted text to standard error, ignoring failures.
pub fn err_fmt(args: std::fmt::Arguments<'_>) {
    let _ = io::stderr().lock().write_fmt(args);
}

/// `print!` that ends the command quietly when the reader has gone away.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::out::write_fmt(format_args!($($arg)*)) };
}

/// `println!` that ends the command quietly when the reader has gone away.
#[macro_export]
macro_rules! outln {
    () => { $crate::out::write_fmt(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::out::write_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `eprintln!` that never panics.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => { $crate::out::err_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `n` and the noun in the right number: `1 file`, `2 files`, `0 files`.
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_take_the_right_number() {
        assert_eq!(super::count(0, "file", "files"), "0 files");
        assert_eq!(super::count(1, "file", "files"), "1 file");
        assert_eq!(super::count(2, "push", "pushes"), "2 pushes");
    }
}
