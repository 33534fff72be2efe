//! Runs SQL statements against an on-disk chDB database and prints the
//! output; for poking at ClickHouse behaviour by hand.
//!
//! cargo run -p ugc-chdb --example chdb-sql -- DATA_DIR 'SELECT 1' 'SELECT 2'
//!
//! Each argument is one statement. The library is `$UGC_CHDB_LIB`, else
//! `$HOME/.cache/ugc/chdb/26.5.3/libchdb.so`; the output format is
//! `$CHDB_FORMAT`, else `PrettyCompactMonoBlock`.

use std::io::Write;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("usage: chdb-sql DATA_DIR SQL...")?);
    let lib = std::env::var_os("UGC_CHDB_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/ugc/chdb/26.5.3/libchdb.so")
        });
    let format = std::env::var("CHDB_FORMAT").unwrap_or_else(|_| "PrettyCompactMonoBlock".into());
    let lib = ugc_chdb::Library::load(&lib)?;
    let mut conn = ugc_chdb::Connection::open(&lib, &dir, &[])?;
    let mut out = std::io::stdout();
    for sql in args {
        writeln!(out, "> {sql}")?;
        match conn.query(&sql, &format) {
            Ok(o) => {
                out.write_all(&o.data)?;
                writeln!(
                    out,
                    "[ok: rows_read={} bytes_read={} elapsed={:?}]",
                    o.rows_read, o.bytes_read, o.elapsed
                )?;
            }
            Err(e) => writeln!(out, "[error code={:?}: {e}]", e.code())?,
        }
    }
    Ok(())
}
