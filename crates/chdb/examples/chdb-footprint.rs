//! Prints what loading chDB and connecting cost this process: wall time,
//! resident memory (VmRSS) and threads, step by step.
//!
//! cargo run -p ugc-chdb --example chdb-footprint
//!
//! The library is `$UGC_CHDB_LIB`, else `$HOME/.cache/ugc/chdb/26.5.3/libchdb.so`.

use std::path::PathBuf;
use std::time::Instant;

fn status() -> String {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or("?")
            .to_owned()
    };
    format!(
        "VmRSS {:>10}, threads {}",
        field("VmRSS:"),
        field("Threads:")
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let lib = std::env::var_os("UGC_CHDB_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/ugc/chdb/26.5.3/libchdb.so")
        });
    let dir = tempfile::tempdir()?;
    println!("{:<28} {}", "start", status());

    let t = Instant::now();
    let lib = ugc_chdb::Library::load(&lib)?;
    println!("{:<28} {}  ({:?})", "load", status(), t.elapsed());

    let t = Instant::now();
    let mut conn = ugc_chdb::Connection::open(&lib, dir.path(), &[])?;
    println!("{:<28} {}  ({:?})", "connect", status(), t.elapsed());

    let t = Instant::now();
    conn.query(
        "CREATE TABLE t (id UInt64, s String) ENGINE = MergeTree ORDER BY id",
        "TabSeparated",
    )?;
    conn.query(
        "INSERT INTO t SELECT number, toString(number) FROM numbers(1000000)",
        "TabSeparated",
    )?;
    let out = conn.query("SELECT count(), uniqExact(s) FROM t", "TabSeparated")?;
    println!(
        "{:<28} {}  ({:?}) -> {}",
        "create + insert 1M + scan",
        status(),
        t.elapsed(),
        String::from_utf8_lossy(&out.data).trim_end()
    );

    let t = Instant::now();
    drop(conn);
    println!(
        "{:<28} {}  ({:?})",
        "close (engine shutdown)",
        status(),
        t.elapsed()
    );
    Ok(())
}
