//! `ugc-bench`: the benchmark suite (see bench/README.md). It runs the `ugc` binary
//! beside it as the system under test, and itself as the suite's hidden children.

use clap::Parser;

/// The same allocator as `ugc`, so that the roles measured here (the loader draining a
/// backlog) have the product's memory behaviour.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Each stage of the pipeline against a baseline measured in the same run. `--quick`
/// checks the harness in under two minutes.
#[derive(Parser, Debug)]
#[command(name = "ugc-bench", version)]
struct Cli {
    #[command(flatten)]
    args: ugc_bench::BenchArgs,
}

fn main() -> anyhow::Result<()> {
    ugc_bench::run(Cli::parse().args)
}
