//! A small safe wrapper over the C API of [chDB](https://github.com/chdb-io/chdb)
//! (ClickHouse as a library).
//!
//! `libchdb.so` is loaded at run time with [`libloading`]: building this crate
//! never needs the library (it is 560 MB and ships as the npm package
//! `@chdb/lib-linux-x64-gnu`; `scripts/fetch-chdb` puts it in the cache).
//!
//! This is the only crate of the project allowed to contain `unsafe`. All of
//! it is in this file, and every block says why it is sound.
//!
//! # The C API used
//!
//! From chDB's `chdb.h` ("new" connection API, present in 26.5.3):
//!
//! ```c
//! typedef struct chdb_result_ { void * internal_data; } chdb_result;          // opaque
//! typedef struct chdb_connection_ { void * internal_data; } * chdb_connection; // a pointer
//!
//! chdb_connection * chdb_connect(int argc, char ** argv);  // NULL on failure
//! void chdb_close_conn(chdb_connection * conn);            // note: pointer to the handle
//! chdb_result * chdb_query_n(chdb_connection conn,         // note: the handle itself
//!                            const char * query, size_t query_len,
//!                            const char * format, size_t format_len);
//! void chdb_destroy_query_result(chdb_result * result);
//! char * chdb_result_buffer(chdb_result * result);
//! size_t chdb_result_length(chdb_result * result);
//! double chdb_result_elapsed(chdb_result * result);        // seconds
//! uint64_t chdb_result_rows_read(chdb_result * result);
//! uint64_t chdb_result_bytes_read(chdb_result * result);
//! const char * chdb_result_error(chdb_result * result);    // NULL when no error
//! ```
//!
//! # Engine lifetime
//!
//! chDB runs one embedded ClickHouse engine per process, booted by the first
//! [`Connection::open`] and shut down when the last connection closes. See
//! [`Connection`] for what that means for several connections.

use std::ffi::{CStr, CString, c_char, c_int};
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Errors from loading chDB, connecting, or running a query.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The shared library could not be loaded (missing, unreadable, not ELF, ...).
    #[error("cannot load chDB library {}: {reason}", path.display())]
    Load { path: PathBuf, reason: String },
    /// The library loaded but lacks a function of chDB's C API: it is not
    /// libchdb.so, or a chDB too old for the connection API.
    #[error("chDB symbol {name} not found: {reason}")]
    Symbol { name: &'static str, reason: String },
    /// `chdb_connect` failed. chDB does not say why through its C API; its
    /// own log (stderr) may.
    #[error("chDB connect failed: {0}")]
    Connect(String),
    /// A query failed; the message is ClickHouse's own, e.g.
    /// `Code: 62. DB::Exception: Syntax error: ...`.
    #[error("chDB query failed: {0}")]
    Query(String),
}

impl Error {
    /// The ClickHouse error code (the `N` of `Code: N.`), when the message has one.
    pub fn code(&self) -> Option<u32> {
        let msg = match self {
            Error::Query(m) | Error::Connect(m) => m,
            Error::Load { .. } | Error::Symbol { .. } => return None,
        };
        let rest = &msg[msg.find("Code: ")? + "Code: ".len()..];
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if !rest[digits..].starts_with('.') {
            return None;
        }
        rest[..digits].parse().ok()
    }
}

/// Opaque `chdb_result`.
#[repr(C)]
struct ChdbResult {
    _opaque: [u8; 0],
}

/// The struct a `chdb_connection` points to; opaque.
#[repr(C)]
struct ChdbConnectionStruct {
    _opaque: [u8; 0],
}

/// `chdb_connection` is itself a pointer type.
type ChdbConnection = *mut ChdbConnectionStruct;

type ConnectFn = unsafe extern "C" fn(c_int, *mut *mut c_char) -> *mut ChdbConnection;
type CloseConnFn = unsafe extern "C" fn(*mut ChdbConnection);
type QueryNFn = unsafe extern "C" fn(
    ChdbConnection,
    *const c_char,
    usize,
    *const c_char,
    usize,
) -> *mut ChdbResult;
type DestroyResultFn = unsafe extern "C" fn(*mut ChdbResult);
type ResultBufferFn = unsafe extern "C" fn(*mut ChdbResult) -> *mut c_char;
type ResultLengthFn = unsafe extern "C" fn(*mut ChdbResult) -> usize;
type ResultElapsedFn = unsafe extern "C" fn(*mut ChdbResult) -> f64;
type ResultU64Fn = unsafe extern "C" fn(*mut ChdbResult) -> u64;
type ResultErrorFn = unsafe extern "C" fn(*mut ChdbResult) -> *const c_char;

/// The resolved entry points. Plain fn pointers: they stay valid because the
/// library is never unloaded (see `Inner::_lib`).
#[derive(Clone, Copy)]
struct Api {
    connect: ConnectFn,
    close_conn: CloseConnFn,
    query_n: QueryNFn,
    destroy_query_result: DestroyResultFn,
    result_buffer: ResultBufferFn,
    result_length: ResultLengthFn,
    result_elapsed: ResultElapsedFn,
    result_rows_read: ResultU64Fn,
    result_bytes_read: ResultU64Fn,
    result_error: ResultErrorFn,
}

struct Inner {
    /// Never dropped, so never `dlclose`d: the engine leaves background
    /// threads running inside the library even after the last connection
    /// closes (26.5 has no `chdb_shutdown`), and unmapping their code would
    /// crash the process.
    _lib: ManuallyDrop<libloading::Library>,
    path: PathBuf,
    api: Api,
}

/// A loaded `libchdb.so`. Cheap to clone; `Send` and `Sync` (it only holds
/// the library handle and immutable function pointers).
#[derive(Clone)]
pub struct Library {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Library {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Library")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Library {
    /// Loads libchdb.so from `path` and resolves the C API.
    ///
    /// `path` is a file path, never a name for the dynamic linker to search
    /// for. Loading maps 560 MB and makes RSS grow by ~140 MB; it takes
    /// ~35 ms when the file is in the page cache. Do it once per process;
    /// loading the same path again returns the same, already mapped library.
    pub fn load(path: &Path) -> Result<Library, Error> {
        let load_err = |reason: String| Error::Load {
            path: path.to_path_buf(),
            reason,
        };
        // A bare file name would make dlopen search the system library path.
        let abs = std::path::absolute(path).map_err(|e| load_err(e.to_string()))?;
        if !abs.is_file() {
            return Err(load_err(
                "no such file (run scripts/fetch-chdb to fetch it)".into(),
            ));
        }
        // SAFETY: loading runs the library's initialisers. libchdb.so's are
        // ClickHouse's static constructors, which only set up its own globals;
        // this is the same thing chDB's own Python and Node bindings do.
        let lib =
            unsafe { libloading::Library::new(&abs) }.map_err(|e| load_err(error_chain(&e)))?;

        /// Looks up `name` and copies out its address as the fn pointer type `T`.
        ///
        /// SAFETY (caller): `T` must be the exact C signature of `name`.
        unsafe fn sym<T: Copy>(lib: &libloading::Library, name: &'static str) -> Result<T, Error> {
            // SAFETY: the caller guarantees `T` matches the symbol's signature.
            // The copied pointer outlives the `Symbol` borrow, which is fine
            // because the library is never unloaded.
            unsafe { lib.get::<T>(name.as_bytes()) }
                .map(|s| *s)
                .map_err(|e| Error::Symbol {
                    name,
                    reason: error_chain(&e),
                })
        }
        // SAFETY: each type below is transcribed from chdb.h (see the crate
        // docs); pointer-to-handle vs handle follows the header exactly.
        let api = unsafe {
            Api {
                connect: sym(&lib, "chdb_connect")?,
                close_conn: sym(&lib, "chdb_close_conn")?,
                query_n: sym(&lib, "chdb_query_n")?,
                destroy_query_result: sym(&lib, "chdb_destroy_query_result")?,
                result_buffer: sym(&lib, "chdb_result_buffer")?,
                result_length: sym(&lib, "chdb_result_length")?,
                result_elapsed: sym(&lib, "chdb_result_elapsed")?,
                result_rows_read: sym(&lib, "chdb_result_rows_read")?,
                result_bytes_read: sym(&lib, "chdb_result_bytes_read")?,
                result_error: sym(&lib, "chdb_result_error")?,
            }
        };
        Ok(Library {
            inner: Arc::new(Inner {
                _lib: ManuallyDrop::new(lib),
                path: abs,
                api,
            }),
        })
    }

    /// The absolute path the library was loaded from.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

/// `e` and its sources: libloading puts dlerror()'s text, which names the
/// file, in the source.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// The output of a successful query.
#[derive(Debug, Clone, Default)]
pub struct QueryOutput {
    /// The result, in the requested format (empty for DDL and INSERT).
    pub data: Vec<u8>,
    /// Rows read. For an INSERT: the rows inserted with `async_insert = 0`,
    /// but 0 under chDB's default `async_insert = 1`.
    pub rows_read: u64,
    pub bytes_read: u64,
    pub elapsed: Duration,
}

/// A chDB connection: owns a `chdb_connection *` and closes it on drop.
///
/// # One engine per process
///
/// chDB boots one embedded ClickHouse per process (measured with 26.5.3):
///
/// - a second connection to the **same** `data_dir` while one is open works
///   and shares the engine and its tables; each connection keeps its own
///   session (`SET` on one does not affect the other), so a second
///   connection made `SET readonly = 1` is a read-only session;
/// - a connection to a **different** `data_dir` while one is open fails
///   with [`Error::Connect`];
/// - closing the last connection shuts the engine down and the next open
///   boots it again (~50 ms), but each such restart leaves a few engine
///   threads behind: open one connection at start-up and keep it for the
///   process's lifetime.
///
/// # Arguments
///
/// `extra_args` are clickhouse-local options, `--name=value`. With 26.5.3
/// only **server-level** options take effect, and only on the connection
/// that boots the engine: `--max_server_memory_usage=<bytes>`,
/// `--mark_cache_size=<bytes>` (default 5 GiB), ... (check with
/// `SELECT * FROM system.server_settings`). Query-level settings passed this
/// way (`--max_threads=1`, `--readonly=1`) are silently ignored, and so are
/// unknown names and invalid values: use `SET name = value` on the
/// connection, or `SETTINGS` on the query, instead.
///
/// # Hazards (26.5.3)
///
/// - The `default` database is clickhouse-local's overlay of an Atomic
///   database and the **file system**: ``SELECT * FROM `/etc/hostname` ``
///   (or ``default.`file` ``, or a bare name of a file in the process's
///   working directory) reads that file, even under `readonly = 1`, and a
///   `CREATE TABLE x` there fails if a file `x` exists in the working
///   directory. Keep tables in a database of your own
///   (`CREATE DATABASE IF NOT EXISTS app ENGINE = Atomic`, qualified names),
///   and never run SQL text that came from outside.
/// - One call may hold several `;`-separated statements; chDB runs them all.
///
/// # Threads
///
/// `Send`: the handle is a heap object not tied to the thread that made it;
/// chDB documents its query and close calls as thread-safe, and the tests
/// run queries on one connection from several threads in turn. Not `Sync`:
/// a connection runs one statement at a time, which [`Connection::query`]
/// taking `&mut self` enforces; share it behind a `Mutex`.
pub struct Connection {
    lib: Library,
    /// Non-null; `*handle` is non-null until `Drop`.
    handle: *mut ChdbConnection,
}

// SAFETY: see "Threads" above: chDB's connection object has no thread
// affinity and its functions may be called from any thread, one at a time;
// `&mut self` on `query` and ownership on `Drop` give that exclusivity.
unsafe impl Send for Connection {}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}

impl Connection {
    /// Opens (creating if needed) the on-disk database at `data_dir`:
    /// argv is `clickhouse --path=<data_dir> <extra_args...>`.
    pub fn open(
        lib: &Library,
        data_dir: &Path,
        extra_args: &[String],
    ) -> Result<Connection, Error> {
        use std::os::unix::ffi::OsStrExt;
        let mut path_arg = b"--path=".to_vec();
        path_arg.extend_from_slice(data_dir.as_os_str().as_bytes());
        let mut args = vec![c"clickhouse".to_owned()];
        for a in std::iter::once(path_arg).chain(extra_args.iter().map(|a| a.clone().into_bytes()))
        {
            args.push(
                CString::new(a)
                    .map_err(|e| Error::Connect(format!("argument contains NUL: {e}")))?,
            );
        }
        // C's char ** argv, NULL-terminated as main()'s is.
        let mut argv: Vec<*mut c_char> = args.iter().map(|a| a.as_ptr().cast_mut()).collect();
        argv.push(std::ptr::null_mut());
        let argc =
            c_int::try_from(args.len()).map_err(|_| Error::Connect("too many arguments".into()))?;

        // SAFETY: argv holds argc valid NUL-terminated strings plus a NULL,
        // all alive (`args`) for the call; chDB copies them (it parses them
        // into its own config) and does not write through them.
        let handle = unsafe { (lib.inner.api.connect)(argc, argv.as_mut_ptr()) };
        // SAFETY: a non-null return points to a handle chDB allocated; we
        // only read it.
        if handle.is_null() || unsafe { (*handle).is_null() } {
            return Err(Error::Connect(format!(
                "chdb_connect returned NULL for --path={} (is another connection open on a different path? \
                 is an argument unknown or invalid?)",
                data_dir.display()
            )));
        }
        Ok(Connection {
            lib: lib.clone(),
            handle,
        })
    }

    /// Runs SQL and returns its output in `format` (e.g. `JSONEachRow`,
    /// `JSON`, `TabSeparated`, `RowBinary`). `sql` may carry inline data
    /// after `FORMAT x`, as in `INSERT INTO t FORMAT JSONEachRow {...}`.
    ///
    /// Note that chDB accepts several `;`-separated statements in one call
    /// and runs them all (the output is the concatenation).
    pub fn query(&mut self, sql: &str, format: &str) -> Result<QueryOutput, Error> {
        let result = self.query_once(sql, format);
        if result.is_err() {
            // chDB 26.5 keeps output produced before an error (earlier
            // statements, blocks sent before a mid-query exception) in the
            // connection's buffer and prepends it to the next query's output.
            // A successful query clears it, so run a throwaway one now.
            let _ = self.query_once("SELECT 1", "TabSeparated");
        }
        result
    }

    fn query_once(&mut self, sql: &str, format: &str) -> Result<QueryOutput, Error> {
        let api = self.lib.inner.api;
        // SAFETY: `self.handle` and `*self.handle` are valid until Drop
        // (invariant of the struct); `&mut self` ensures one call at a time.
        // The query and format are passed with their lengths (chdb_query_n is
        // binary-safe, nothing needs a NUL) and are only read during the call.
        let res = unsafe {
            (api.query_n)(
                *self.handle,
                sql.as_ptr().cast(),
                sql.len(),
                format.as_ptr().cast(),
                format.len(),
            )
        };
        if res.is_null() {
            return Err(Error::Query("chdb_query_n returned NULL".into()));
        }
        // Destroys the result however this function returns.
        let res = ResultGuard { api, res };

        // SAFETY: `res` is a live result.
        let err = unsafe { (api.result_error)(res.res) };
        if !err.is_null() {
            // SAFETY: a non-null error is a NUL-terminated string owned by
            // `res`, which outlives this borrow; it is copied right away.
            let msg = unsafe { CStr::from_ptr(err) }
                .to_string_lossy()
                .trim_end()
                .to_owned();
            if !msg.is_empty() {
                return Err(Error::Query(msg));
            }
        }
        // SAFETY: `res` is live; buffer/length describe `len` readable bytes
        // owned by the result (or NULL/0 for no output), copied out before
        // the result is destroyed.
        let data = unsafe {
            let buf = (api.result_buffer)(res.res);
            let len = (api.result_length)(res.res);
            if buf.is_null() || len == 0 {
                Vec::new()
            } else {
                std::slice::from_raw_parts(buf.cast::<u8>(), len).to_vec()
            }
        };
        // SAFETY: `res` is live; these read plain numbers.
        let (rows_read, bytes_read, secs) = unsafe {
            (
                (api.result_rows_read)(res.res),
                (api.result_bytes_read)(res.res),
                (api.result_elapsed)(res.res),
            )
        };
        Ok(QueryOutput {
            data,
            rows_read,
            bytes_read,
            elapsed: Duration::try_from_secs_f64(secs).unwrap_or_default(),
        })
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // SAFETY: `self.handle` came from chdb_connect and is closed exactly
        // once, here; chdb_close_conn takes the pointer to the handle, frees
        // the connection and nulls `*handle`. (The 8-byte box holding the
        // handle is chDB's and has no free function: it leaks per connection.)
        unsafe { (self.lib.inner.api.close_conn)(self.handle) }
    }
}

/// Calls `chdb_destroy_query_result` on drop.
struct ResultGuard {
    api: Api,
    res: *mut ChdbResult,
}

impl Drop for ResultGuard {
    fn drop(&mut self) {
        // SAFETY: `res` is a non-null result from chdb_query_n, destroyed once.
        unsafe { (self.api.destroy_query_result)(self.res) }
    }
}

/// The chDB release the product is built and tested against; `scripts/fetch-chdb`
/// installs the same one.
pub const CHDB_VERSION: &str = "26.5.3";

/// Where the scripts install what the project needs from outside (libchdb.so, the
/// test broker): `$UGC_CACHE_DIR`, else `$HOME/.cache/ugc`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("UGC_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."));
            home.join(".cache/ugc")
        })
}

/// Where `scripts/fetch-chdb` puts the library: `<cache>/chdb/<version>/libchdb.so`.
pub fn default_library_path() -> PathBuf {
    cache_dir()
        .join("chdb")
        .join(CHDB_VERSION)
        .join("libchdb.so")
}

#[cfg(test)]
mod tests {
    use super::Error;

    #[test]
    fn parses_clickhouse_error_codes() {
        let e = Error::Query("Code: 62. DB::Exception: Syntax error: failed at position 1".into());
        assert_eq!(e.code(), Some(62));
        let e = Error::Query("Error: Code: 60. DB::Exception: Unknown table".into());
        assert_eq!(e.code(), Some(60));
        assert_eq!(Error::Query("no code here".into()).code(), None);
        assert_eq!(Error::Query("Code: abc.".into()).code(), None);
        assert_eq!(Error::Connect("x".into()).code(), None);
    }
}
