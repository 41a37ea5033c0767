//! Writes a synthetic agent library for benchmarks and profiling:
//! `cargo run --release -p ctxsync-agents --example gen_library -- <dir> [agents]`.

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: gen_library <dir> [agents (default 10000)]");
        std::process::exit(2);
    };
    let n = match args.next().map(|s| s.parse::<usize>()) {
        None => 10_000,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            eprintln!("agents: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = ctxsync_agents::synth::generate(std::path::Path::new(&dir), n) {
        eprintln!("{e}");
        std::process::exit(1);
    }
}
