//! PostgreSQL 15 (the Debian package `postgresql`) as a plain process: `initdb` into a
//! temp dir, `postgres` on a free port, with a watchdog like every server here. PostgreSQL
//! refuses to run as root, so as root both run as the package's `postgres` user.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::clickhouse::{Proc, Reaper, reaper, tail};
use crate::ports::free_port;

pub const POSTGRES_BIN: &str = "/usr/lib/postgresql/15/bin";
const START_DEADLINE: Duration = Duration::from_secs(60);

pub struct Postgres {
    proc: Option<Proc>,
    port: u16,
    dir: PathBuf,
    temp: Option<tempfile::TempDir>,
    /// fsync on: the server's default durability (benchmarks), not the tests' speed.
    durable: bool,
}

/// The uid and gid to run as: the `postgres` user when we are root, else ourselves.
fn run_as() -> Option<(u32, u32)> {
    let id = |args: &[&str]| -> Option<u32> {
        let out = Command::new("id").args(args).output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    if id(&["-u"])? != 0 {
        return None;
    }
    Some((id(&["-u", "postgres"])?, id(&["-g", "postgres"])?))
}

fn command(bin: &str, user: Option<(u32, u32)>) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(Path::new(POSTGRES_BIN).join(bin));
    if let Some((uid, gid)) = user {
        c.uid(uid).gid(gid);
    }
    c
}

impl Postgres {
    /// Initialises a cluster in a new temp dir and starts it; fails loudly (with its log).
    pub fn start() -> Result<Postgres, String> {
        Self::start_with(false)
    }

    /// Like [`Postgres::start`], with PostgreSQL's default `fsync = on`: a commit waits
    /// for its WAL flush, as on an operator's server. For benchmarks.
    pub fn start_durable() -> Result<Postgres, String> {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> Result<Postgres, String> {
        if !Path::new(POSTGRES_BIN).join("postgres").exists() {
            return Err(format!(
                "PostgreSQL 15 is not installed ({POSTGRES_BIN}/postgres): install the Debian \
                 package postgresql (scripts/test does)"
            ));
        }
        let temp = tempfile::tempdir().map_err(|e| e.to_string())?;
        let dir = temp.path().to_path_buf();
        let user = run_as();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
        }
        let out = command("initdb", user)
            .args([
                "-D",
                "data",
                "-A",
                "trust",
                "-U",
                "ugc",
                "--no-sync",
                "-E",
                "UTF8",
            ])
            .current_dir(&dir)
            .output()
            .map_err(|e| format!("cannot run initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let mut pg = Postgres {
            proc: None,
            port: free_port(),
            dir,
            temp: Some(temp),
            durable,
        };
        pg.spawn()?;
        Ok(pg)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut cmd = command("postgres", run_as());
        cmd.current_dir(&self.dir).args([
            "-D",
            "data",
            "-p",
            &self.port.to_string(),
            "-k",
            &self.dir.display().to_string(),
            "-c",
            "listen_addresses=127.0.0.1",
            // Tests need no crash safety of their own database; the product's fsyncs are
            // its own business (SQLite) or the server's configuration (here).
            "-c",
            if self.durable {
                "fsync=on"
            } else {
                "fsync=off"
            },
            "-c",
            "max_connections=200",
        ]);
        let log = self.dir.join("postgres.log");
        let mut proc = Proc::spawn(cmd, &log)?;
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = proc.exited() {
                return Err(format!("postgres exited ({status}): {}", tail(&log, 30)));
            }
            let ready = Command::new(Path::new(POSTGRES_BIN).join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "postgres did not answer within {START_DEADLINE:?}: {}",
                    tail(&log, 30)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.proc = Some(proc);
        Ok(())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A new, empty database; its URL. Each test server gets its own.
    pub fn create_database(&self, name: &str) -> Result<String, String> {
        let out = Command::new(Path::new(POSTGRES_BIN).join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "ugc"])
            .args(["-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c"])
            .arg(format!("CREATE DATABASE \"{name}\""))
            .output()
            .map_err(|e| format!("cannot run psql: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "CREATE DATABASE {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(format!("postgres://ugc@127.0.0.1:{}/{name}", self.port))
    }

    /// A database with a name no other caller of this process gets.
    pub fn fresh_database(&self) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        self.create_database(&name)
            .unwrap_or_else(|e| panic!("cannot create a PostgreSQL database: {e}"))
    }

    /// kill -9: the server stops answering at once.
    pub fn kill(&mut self) {
        if let Some(p) = self.proc.take() {
            p.kill9();
        }
    }

    /// Starts it again on the same port with the same data.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        // The killed server's backends exit on their own a moment later; until then the
        // new one refuses to start (its shared memory is still in use).
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    pub fn pids(&self) -> Vec<u32> {
        self.proc.iter().map(Proc::pid).collect()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One server for the whole test process, started on first use.
pub struct SharedPostgres {
    pub server: Postgres,
    _reaper: Reaper,
}

pub fn shared_postgres() -> &'static Postgres {
    static SHARED: OnceLock<SharedPostgres> = OnceLock::new();
    &SHARED
        .get_or_init(|| {
            let mut server =
                Postgres::start().unwrap_or_else(|e| panic!("cannot start PostgreSQL: {e}"));
            let temp = server.temp.take().expect("own temp dir").keep();
            let reaper = reaper(&temp, &server.pids()).unwrap_or_else(|e| panic!("{e}"));
            SharedPostgres {
                server,
                _reaper: reaper,
            }
        })
        .server
}
