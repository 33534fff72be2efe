//! Tests against the real libchdb.so: no mocks.
//!
//! The library is `$UGC_CHDB_LIB`, else the path `scripts/fetch-chdb`
//! installs it to. A missing library fails the tests; it never skips them.
//!
//! chDB runs one engine per process, bound to one `--path`: while a
//! connection is open, opening one on another path fails. Every test here
//! uses its own temp dir, and cargo runs tests on parallel threads, so each
//! test that connects first takes `ENGINE`, a process-wide lock, and holds it
//! until its connections are closed.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};

use ugc_chdb::{Connection, Error, Library};

static ENGINE: Mutex<()> = Mutex::new(());

/// Serializes the tests that use the engine. A test that panicked while
/// holding the lock has closed its connections (they drop while unwinding),
/// so poisoning carries no broken state.
fn engine() -> MutexGuard<'static, ()> {
    ENGINE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn lib_path() -> PathBuf {
    std::env::var_os("UGC_CHDB_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(ugc_chdb::default_library_path)
}

/// Loaded once per test process.
fn lib() -> Library {
    static LIB: OnceLock<Library> = OnceLock::new();
    LIB.get_or_init(|| {
        let path = lib_path();
        assert!(
            path.is_file(),
            "chDB library not found at {}: run scripts/fetch-chdb, or point UGC_CHDB_LIB at libchdb.so",
            path.display()
        );
        Library::load(&path).unwrap_or_else(|e| panic!("{e}"))
    })
    .clone()
}

fn text(conn: &mut Connection, sql: &str, format: &str) -> String {
    let out = conn
        .query(sql, format)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    String::from_utf8(out.data).expect("utf-8 output")
}

#[test]
fn library_and_connection_are_send_and_library_is_sync() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<Library>();
    sync::<Library>();
    send::<Connection>();
}

#[test]
fn select_one_as_json_each_row() {
    let _engine = engine();
    let dir = tempfile::tempdir().unwrap();
    let mut conn = Connection::open(&lib(), dir.path(), &[]).unwrap();
    let out = conn.query("SELECT 1 AS x", "JSONEachRow").unwrap();
    assert_eq!(String::from_utf8_lossy(&out.data), "{\"x\":1}\n");
    assert_eq!(out.rows_read, 1);
}

#[test]
fn syntax_error_is_an_error_with_code_62() {
    let _engine = engine();
    let dir = tempfile::tempdir().unwrap();
    let mut conn = Connection::open(&lib(), dir.path(), &[]).unwrap();
    let err = conn.query("SELEC 1", "JSONEachRow").unwrap_err();
    assert!(
        matches!(&err, Error::Query(msg) if msg.contains("Syntax error")),
        "{err}"
    );
    assert_eq!(err.code(), Some(62), "{err}");
    // The connection is still usable.
    assert_eq!(text(&mut conn, "SELECT 2", "TabSeparated"), "2\n");
}

#[test]
fn output_of_a_failed_query_does_not_leak_into_the_next() {
    // chDB 26.5 keeps what a failing query already wrote and prepends it to
    // the next result; Connection::query drains it. Without that the SELECT
    // below returns tens of thousands of "0" lines before its "ok".
    let _engine = engine();
    let dir = tempfile::tempdir().unwrap();
    let mut conn = Connection::open(&lib(), dir.path(), &[]).unwrap();
    let err = conn
        .query(
            "SELECT throwIf(number = 70000) FROM numbers(100000)",
            "TabSeparated",
        )
        .unwrap_err();
    assert_eq!(err.code(), Some(395), "{err}");
    assert_eq!(text(&mut conn, "SELECT 'ok'", "TabSeparated"), "ok\n");
    let err = conn
        .query("SELECT 1; SELECT throwIf(1)", "TabSeparated")
        .unwrap_err();
    assert_eq!(err.code(), Some(395), "{err}");
    assert_eq!(text(&mut conn, "SELECT 'ok'", "TabSeparated"), "ok\n");
}

#[test]
fn merge_tree_insert_json_each_row_and_read_back() {
    let _engine = engine();
    let dir = tempfile::tempdir().unwrap();
    let mut conn = Connection::open(&lib(), dir.path(), &[]).unwrap();
    conn.query(
        "CREATE TABLE events (id UUID, at DateTime64(3, 'UTC'), kind LowCardinality(String), note Nullable(String)) \
         ENGINE = MergeTree ORDER BY (at, id)",
        "TabSeparated",
    )
    .unwrap();
    let insert = "INSERT INTO events FORMAT JSONEachRow \
        {\"id\":\"0192f3a4-1b2c-7d3e-8f40-123456789abc\",\"at\":\"2026-11-23 08:00:00.123\",\"kind\":\"click\",\"note\":null}\n\
        {\"id\":\"0192f3a4-1b2c-7d3e-8f40-123456789abd\",\"at\":\"2026-11-23 09:00:00.5\",\"kind\":\"view\",\"note\":\"hi\"}";
    conn.query(insert, "TabSeparated").unwrap();
    assert_eq!(
        text(
            &mut conn,
            "SELECT id, at, kind, note FROM events ORDER BY at",
            "JSONEachRow"
        ),
        "{\"id\":\"0192f3a4-1b2c-7d3e-8f40-123456789abc\",\"at\":\"2026-11-23 08:00:00.123\",\"kind\":\"click\",\"note\":null}\n\
         {\"id\":\"0192f3a4-1b2c-7d3e-8f40-123456789abd\",\"at\":\"2026-11-23 09:00:00.500\",\"kind\":\"view\",\"note\":\"hi\"}\n"
    );
    assert_eq!(
        text(
            &mut conn,
            "SELECT argMaxIf(kind, at, note IS NULL), argMax(kind, at) FROM events",
            "TabSeparated"
        ),
        "click\tview\n"
    );
}

#[test]
fn deduplication_token_drops_repeated_inserts() {
    let _engine = engine();
    let dir = tempfile::tempdir().unwrap();
    let mut conn = Connection::open(&lib(), dir.path(), &[]).unwrap();
    for sql in [
        "CREATE TABLE t (id UInt64, v String) ENGINE = ReplacingMergeTree ORDER BY id \
         SETTINGS non_replicated_deduplication_window = 1000",
        // The view's target needs its own window, or it takes every repeat.
        "CREATE TABLE per_id (id UInt64, n UInt64) ENGINE = SummingMergeTree ORDER BY id \
         SETTINGS non_replicated_deduplication_window = 1000",
        "CREATE MATERIALIZED VIEW per_id_mv TO per_id AS SELECT id, count() AS n FROM t GROUP BY id",
    ] {
        conn.query(sql, "TabSeparated").unwrap();
    }
    let batch = |token: &str, rows: &str| {
        format!(
            "INSERT INTO t SETTINGS insert_deduplication_token = '{token}' FORMAT JSONEachRow {rows}"
        )
    };
    let rows = "{\"id\":1,\"v\":\"a\"}\n{\"id\":2,\"v\":\"b\"}";
    conn.query(&batch("b1", rows), "TabSeparated").unwrap();
    conn.query(&batch("b1", rows), "TabSeparated").unwrap(); // same token, same rows: dropped
    conn.query(&batch("b1", "{\"id\":3,\"v\":\"c\"}"), "TabSeparated")
        .unwrap(); // same token, other rows: dropped too
    conn.query(&batch("b2", "{\"id\":3,\"v\":\"c\"}"), "TabSeparated")
        .unwrap();
    assert_eq!(
        text(&mut conn, "SELECT id, v FROM t ORDER BY id", "TabSeparated"),
        "1\ta\n2\tb\n3\tc\n"
    );
    assert_eq!(
        text(
            &mut conn,
            "SELECT id, sum(n) FROM per_id GROUP BY id ORDER BY id",
            "TabSeparated"
        ),
        "1\t1\n2\t1\n3\t1\n"
    );
}

#[test]
fn data_persists_after_close_and_reopen() {
    let _engine = engine();
    let dir = tempfile::tempdir().unwrap();
    {
        let mut conn = Connection::open(&lib(), dir.path(), &[]).unwrap();
        conn.query(
            "CREATE TABLE kept (n UInt32) ENGINE = MergeTree ORDER BY n",
            "TabSeparated",
        )
        .unwrap();
        conn.query(
            "INSERT INTO kept FORMAT JSONEachRow {\"n\":7}\n{\"n\":8}",
            "TabSeparated",
        )
        .unwrap();
    } // closed: the engine shuts down
    let mut conn = Connection::open(&lib(), dir.path(), &[]).unwrap();
    assert_eq!(
        text(&mut conn, "SELECT n FROM kept ORDER BY n", "TabSeparated"),
        "7\n8\n"
    );
}

#[test]
fn one_engine_per_process_one_path_at_a_time() {
    let _engine = engine();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut first = Connection::open(&lib(), a.path(), &[]).unwrap();
    first
        .query(
            "CREATE TABLE shared (n UInt8) ENGINE = MergeTree ORDER BY n",
            "TabSeparated",
        )
        .unwrap();

    // Same path: a second session on the same engine, with its own settings.
    let mut reader = Connection::open(&lib(), a.path(), &[]).unwrap();
    reader.query("SET readonly = 1", "TabSeparated").unwrap();
    assert_eq!(
        text(&mut reader, "SELECT count() FROM shared", "TabSeparated"),
        "0\n"
    );
    let err = reader
        .query("INSERT INTO shared VALUES (1)", "TabSeparated")
        .unwrap_err();
    assert_eq!(err.code(), Some(164), "{err}"); // READONLY
    first
        .query("INSERT INTO shared VALUES (1)", "TabSeparated")
        .unwrap();
    assert_eq!(
        text(&mut reader, "SELECT count() FROM shared", "TabSeparated"),
        "1\n"
    );

    // Another path while the engine runs on `a`: refused, without a crash.
    let err = Connection::open(&lib(), b.path(), &[]).unwrap_err();
    assert!(matches!(err, Error::Connect(_)), "{err}");
}

#[test]
fn queries_from_several_threads_in_turn() {
    let _engine = engine();
    let dir = tempfile::tempdir().unwrap();
    let mut conn = Connection::open(&lib(), dir.path(), &[]).unwrap();
    conn.query(
        "CREATE TABLE n (v UInt64) ENGINE = MergeTree ORDER BY v",
        "TabSeparated",
    )
    .unwrap();
    let conn = Mutex::new(conn);
    std::thread::scope(|s| {
        for t in 0..4 {
            let conn = &conn;
            s.spawn(move || {
                for i in 0..10 {
                    let mut c = conn.lock().unwrap();
                    c.query(
                        &format!("INSERT INTO n VALUES ({})", t * 100 + i),
                        "TabSeparated",
                    )
                    .unwrap();
                    c.query("SELECT count() FROM n", "TabSeparated").unwrap();
                }
            });
        }
    });
    assert_eq!(
        text(
            &mut conn.lock().unwrap(),
            "SELECT count(), uniqExact(v) FROM n",
            "TabSeparated"
        ),
        "40\t40\n"
    );
}

#[test]
fn load_errors_name_the_path() {
    let missing = std::env::temp_dir().join("no-such-dir/libchdb.so");
    let err = Library::load(&missing).unwrap_err();
    assert!(
        matches!(&err, Error::Load { path, .. } if *path == missing),
        "{err}"
    );
    assert!(err.to_string().contains("no-such-dir/libchdb.so"), "{err}");

    let not_elf = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(not_elf.path(), b"not a shared library").unwrap();
    let err = Library::load(not_elf.path()).unwrap_err();
    assert!(matches!(err, Error::Load { .. }), "{err}");
    assert!(
        err.to_string().contains(&*not_elf.path().to_string_lossy()),
        "{err}"
    );
}
