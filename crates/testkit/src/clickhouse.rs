//! A ClickHouse server (the Debian package's `clickhouse-server`), ZooKeeper (the Debian
//! package's jar) and a cluster of `shards × replicas` ClickHouse processes sharing one
//! ZooKeeper, as plain processes under temp dirs on free ports.
//!
//! Every process gets a watchdog (`sh` blocked reading a pipe from this process): when
//! the test process ends in any way, the pipe closes and the watchdog kills the server,
//! so even servers held in a `static` never outlive the tests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::ports::free_port;

pub const CLICKHOUSE_SERVER: &str = "/usr/sbin/clickhouse-server";
pub const CLICKHOUSE_CONFIG_DIR: &str = "/etc/clickhouse-server";
const ZOOKEEPER_CLASSPATH: &[&str] = &[
    "/usr/share/java/zookeeper.jar",
    "/usr/share/java/zookeeper-jute.jar",
    "/usr/share/java/slf4j-api.jar",
    "/usr/share/java/slf4j-log4j12.jar",
    "/usr/share/java/log4j-1.2.jar",
    "/usr/share/java/netty-handler.jar",
    "/usr/share/java/netty-common.jar",
    "/usr/share/java/netty-buffer.jar",
    "/usr/share/java/netty-transport.jar",
    "/usr/share/java/netty-transport-native-epoll.jar",
    "/usr/share/java/netty-transport-native-unix-common.jar",
    "/usr/share/java/netty-codec.jar",
    "/usr/share/java/netty-resolver.jar",
    "/usr/share/java/metrics-core.jar",
    "/usr/share/java/snappy-java.jar",
    "/usr/share/java/commons-cli.jar",
];
/// What a server needs for its Kafka engine tables to read from tansu. The Debian
/// package's 18.16 links the system's librdkafka (2.0.2), which misreads the tagged
/// fields tansu sends in its ApiVersions answer (it skips one byte too few per field,
/// fixed in librdkafka 2.2) and then takes the broker for down. Without that request
/// it speaks the legacy protocol of `broker_version_fallback`, which works with tansu
/// for everything but the offset lookup (ListOffsets v0): a group must have committed
/// offsets before its engine table starts.
pub const KAFKA_ENGINE_CONFIG: &str = "    <kafka><api_version_request>false</api_version_request>\
     <broker_version_fallback>0.9.0</broker_version_fallback></kafka>\n";
/// The cluster's name in `remote_servers`, as `ugc --clickhouse-cluster` expects it.
pub const CLUSTER_NAME: &str = "ugc";
const START_DEADLINE: Duration = Duration::from_secs(60);
const STOP_DEADLINE: Duration = Duration::from_secs(60);

/// A child process plus its watchdog.
pub(crate) struct Proc {
    child: Child,
    watchdog: Child,
    _pipe: ChildStdin,
}

impl Proc {
    pub(crate) fn spawn(mut cmd: Command, log: &Path) -> Result<Proc, String> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(r#"read _ ; kill -9 "$0" 2>/dev/null"#)
            .arg(child.id().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start a watchdog: {e}"))?;
        let pipe = watchdog.stdin.take().expect("piped stdin");
        Ok(Proc {
            child,
            watchdog,
            _pipe: pipe,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub(crate) fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the exit (kill -9 past the deadline).
    fn terminate(mut self) -> Result<(), String> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + STOP_DEADLINE;
        while self.exited().is_none() {
            if Instant::now() > deadline {
                self.kill9();
                return Err(format!("did not stop within {STOP_DEADLINE:?} of SIGTERM"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
    }
}

pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// One HTTP request to 127.0.0.1:`port`; (status, body). reqwest's blocking client
/// runs a runtime of its own, which must be neither built nor dropped on a thread that
/// drives async tasks: the request gets a thread of its own, so async tests may call it.
fn http(port: u16, method: &str, path: &str, body: &[u8]) -> Result<(u16, String), String> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    let (url, body) = (format!("http://127.0.0.1:{port}{path}"), body.to_vec());
    std::thread::spawn(move || {
        let answer = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(600))
            .build()?
            .request(method, url)
            .body(body)
            .send()?;
        let status = answer.status().as_u16();
        Ok((status, answer.text()?))
    })
    .join()
    .map_err(|_| "the HTTP request's thread panicked".to_owned())?
    .map_err(|e: reqwest::Error| e.to_string())
}

/// Posts `body` (a statement, and an INSERT's data after it) to the server whose HTTP
/// interface is on 127.0.0.1:`port`; the answer on 200, else an error with it.
pub fn post(port: u16, body: &[u8]) -> Result<String, String> {
    match http(port, "POST", "/", body) {
        Ok((200, answer)) => Ok(answer),
        Ok((status, answer)) => Err(format!("answered {status}: {answer}")),
        Err(e) => Err(e),
    }
}

/// ZooKeeper (the Debian package's 3.8 jar) as one standalone server.
pub struct ZooKeeper {
    proc: Option<Proc>,
    pub port: u16,
    dir: PathBuf,
}

impl ZooKeeper {
    pub fn start(dir: &Path) -> Result<ZooKeeper, String> {
        let data = dir.join("data");
        std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
        let port = free_port();
        // tickTime 1 s: clients may ask for sessions of 2–20 s; admin server off (it
        // would take port 8080); the four-letter words answer readiness probes.
        let cfg = format!(
            "tickTime=1000\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={port}\n\
             clientPortAddress=127.0.0.1\nmaxClientCnxns=0\nadmin.enableServer=false\n\
             4lw.commands.whitelist=ruok,srvr,stat,mntr\n",
            data.display()
        );
        let cfg_path = dir.join("zoo.cfg");
        std::fs::write(&cfg_path, cfg).map_err(|e| e.to_string())?;
        let mut zk = ZooKeeper {
            proc: None,
            port,
            dir: dir.to_owned(),
        };
        let mut cmd = Command::new("java");
        cmd.arg("-Xmx256m")
            .arg(format!("-Dzookeeper.log.dir={}", dir.display()))
            .arg("-cp")
            .arg(ZOOKEEPER_CLASSPATH.join(":"))
            .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
            .arg(&cfg_path)
            .current_dir(dir);
        zk.proc = Some(Proc::spawn(cmd, &zk.log_path())?);
        zk.wait_ready()?;
        Ok(zk)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("zookeeper.log")
    }

    /// Waits for `srvr` to print `Mode:`: `ruok` answers before the data is loaded, and
    /// a ClickHouse node with replicated tables that connects earlier exits.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = self.proc.as_mut().and_then(Proc::exited) {
                return Err(format!(
                    "ZooKeeper exited during start-up ({status}); its log:\n{}",
                    tail(&self.log_path(), 40)
                ));
            }
            if self
                .four_letter("srvr")
                .is_some_and(|s| s.contains("Mode:"))
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "ZooKeeper not serving within {START_DEADLINE:?}; its log:\n{}",
                    tail(&self.log_path(), 40)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn four_letter(&self, word: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(word.as_bytes()).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    }

    fn pids(&self) -> Vec<u32> {
        self.proc.iter().map(Proc::pid).collect()
    }
}

/// What a node needs to know about the cluster it belongs to.
#[derive(Clone)]
struct Membership {
    zookeeper_port: u16,
    shard: usize,
    replica: usize,
    /// tcp ports by shard, then replica.
    topology: Vec<Vec<u16>>,
}

/// One `clickhouse-server` process with its own config, data, logs and ports.
pub struct ClickHouse {
    proc: Option<Proc>,
    dir: PathBuf,
    pub name: String,
    pub http_port: u16,
    pub tcp_port: u16,
    pub interserver_port: u16,
    /// Owned temp dir of a stand-alone server (cluster nodes live in the cluster's).
    temp: Option<tempfile::TempDir>,
    /// A cluster node: ready only once its DDL worker is (see `ddl_worker_ready`).
    member: bool,
    /// The length of `server.log` when the process was last spawned: readiness looks
    /// only at what this run of the server wrote.
    log_mark: u64,
}

impl ClickHouse {
    /// A stand-alone server in its own temp dir, started and answering.
    pub fn start_single() -> Result<ClickHouse, String> {
        Self::start_single_with("")
    }

    /// [`Self::start_single`] with `extra` (XML elements, e.g. [`KAFKA_ENGINE_CONFIG`])
    /// added to the server's configuration.
    pub fn start_single_with(extra: &str) -> Result<ClickHouse, String> {
        let temp = tempfile::Builder::new()
            .prefix("ugc-clickhouse-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let mut node = Self::configure(temp.path(), "single", None, extra)?;
        node.temp = Some(temp);
        node.start()?;
        Ok(node)
    }

    fn configure(
        dir: &Path,
        name: &str,
        member: Option<&Membership>,
        extra: &str,
    ) -> Result<Self, String> {
        let node = ClickHouse {
            proc: None,
            dir: dir.join(name),
            name: name.to_owned(),
            http_port: free_port(),
            tcp_port: member.map_or_else(free_port, |m| m.topology[m.shard][m.replica]),
            interserver_port: free_port(),
            temp: None,
            member: member.is_some(),
            log_mark: 0,
        };
        let d = &node.dir;
        std::fs::create_dir_all(d.join("config.d")).map_err(|e| e.to_string())?;
        for f in ["config.xml", "users.xml"] {
            std::fs::copy(Path::new(CLICKHOUSE_CONFIG_DIR).join(f), d.join(f)).map_err(|e| {
                format!(
                    "cannot copy {CLICKHOUSE_CONFIG_DIR}/{f}: {e} (is clickhouse-server installed?)"
                )
            })?;
        }
        let p = |sub: &str| format!("{}/{sub}/", d.display());
        let mut xml = format!(
            r#"<?xml version="1.0"?>
<yandex>
    <logger replace="replace">
        <level>{level}</level>
        <log>{log}server.log</log>
        <errorlog>{log}server.err.log</errorlog>
        <size>100M</size>
        <count>1</count>
    </logger>
    <listen_host replace="replace">127.0.0.1</listen_host>
    <http_port>{http}</http_port>
    <tcp_port>{tcp}</tcp_port>
    <interserver_http_port>{inter}</interserver_http_port>
    <interserver_http_host>127.0.0.1</interserver_http_host>
    <path>{data}</path>
    <tmp_path>{tmp}</tmp_path>
    <user_files_path>{files}</user_files_path>
    <format_schema_path>{schemas}</format_schema_path>
    <mark_cache_size>268435456</mark_cache_size>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
"#,
            // Debug on cluster nodes: the DDL worker says when it is ready only there.
            level = if member.is_some() {
                "debug"
            } else {
                "information"
            },
            log = p("log"),
            http = node.http_port,
            tcp = node.tcp_port,
            inter = node.interserver_port,
            data = p("data"),
            tmp = p("tmp"),
            files = p("user_files"),
            schemas = p("format_schemas"),
        );
        if let Some(m) = member {
            xml.push_str(&format!(
                "    <macros replace=\"replace\"><shard>{:02}</shard><replica>s{}r{}</replica></macros>\n",
                m.shard + 1,
                m.shard + 1,
                m.replica + 1
            ));
            // A session timeout short enough that a killed replica's old session (and
            // with it its "active" mark) expires within seconds of its restart.
            xml.push_str(&format!(
                "    <zookeeper replace=\"replace\"><node><host>127.0.0.1</host><port>{}</port></node>\
                 <session_timeout_ms>10000</session_timeout_ms></zookeeper>\n",
                m.zookeeper_port
            ));
            xml.push_str(&format!(
                "    <remote_servers replace=\"replace\"><{CLUSTER_NAME}>\n"
            ));
            for shard in &m.topology {
                xml.push_str("        <shard><internal_replication>true</internal_replication>");
                for port in shard {
                    xml.push_str(&format!(
                        "<replica><host>127.0.0.1</host><port>{port}</port></replica>"
                    ));
                }
                xml.push_str("</shard>\n");
            }
            xml.push_str(&format!("    </{CLUSTER_NAME}></remote_servers>\n"));
        }
        xml.push_str(extra);
        xml.push_str("</yandex>\n");
        std::fs::write(d.join("config.d").join("ugc-test.xml"), xml).map_err(|e| e.to_string())?;
        Ok(node)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    fn server_log(&self) -> PathBuf {
        self.dir.join("log/server.log")
    }

    /// 18.16 answers `/ping` before its DDL worker has a ZooKeeper session, and an
    /// `ON CLUSTER` query in that window dereferences the missing session and
    /// segfaults the server. The worker logs "Processing tasks" once it has one.
    fn ddl_worker_ready(&self) -> bool {
        let Ok(mut f) = std::fs::File::open(self.server_log()) else {
            return false;
        };
        let mut since_start = String::new();
        use std::io::Seek;
        f.seek(std::io::SeekFrom::Start(self.log_mark)).is_ok()
            && f.read_to_string(&mut since_start).is_ok()
            && since_start.contains("DDLWorker: Processing tasks")
    }

    fn err_log(&self) -> String {
        let err = tail(&self.dir.join("log/server.err.log"), 30);
        let out = tail(&self.dir.join("stdout.log"), 10);
        format!("{err}\n{out}")
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(|p| p.exited().is_none())
    }

    /// The server process's id while it runs (for CPU accounting).
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(|p| p.child.id())
    }

    fn spawn(&mut self) -> Result<(), String> {
        assert!(self.proc.is_none(), "{} is already running", self.name);
        let mut cmd = Command::new(CLICKHOUSE_SERVER);
        cmd.arg(format!(
            "--config-file={}",
            self.dir.join("config.xml").display()
        ))
        .current_dir(&self.dir);
        self.log_mark = std::fs::metadata(self.server_log()).map_or(0, |m| m.len());
        self.proc = Some(Proc::spawn(cmd, &self.dir.join("stdout.log"))?);
        Ok(())
    }

    fn wait_ready(&mut self, deadline: Instant) -> Result<(), String> {
        loop {
            if let Some(status) = self.proc.as_mut().and_then(Proc::exited) {
                self.proc = None;
                return Err(format!(
                    "clickhouse-server {} exited during start-up ({status}); its log:\n{}",
                    self.name,
                    self.err_log()
                ));
            }
            if http(self.http_port, "GET", "/ping", b"")
                .is_ok_and(|(s, b)| s == 200 && b.starts_with("Ok"))
                && (!self.member || self.ddl_worker_ready())
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "clickhouse-server {} not answering{} within {START_DEADLINE:?}; its log:\n{}",
                    self.name,
                    if self.member {
                        " with its DDL worker ready"
                    } else {
                        ""
                    },
                    self.err_log()
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Starts the process (again, on the same data and ports) and waits for `/ping`.
    pub fn start(&mut self) -> Result<(), String> {
        self.spawn()?;
        self.wait_ready(Instant::now() + START_DEADLINE)
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        if let Some(p) = self.proc.take() {
            p.kill9();
        }
    }

    /// A clean shutdown (SIGTERM), waited for.
    pub fn stop(&mut self) -> Result<(), String> {
        match self.proc.take() {
            Some(p) => p.terminate().map_err(|e| format!("{}: {e}", self.name)),
            None => Ok(()),
        }
    }

    /// Runs one statement over HTTP; the body on 200, else an error with the body.
    pub fn query(&self, sql: &str) -> Result<String, String> {
        match http(self.http_port, "POST", "/", sql.as_bytes()) {
            Ok((200, body)) => Ok(body),
            Ok((status, body)) => Err(format!("{} answered {status}: {body}", self.name)),
            // No answer at all (a crash, most likely): the server's own last words go
            // with the error.
            Err(e) => Err(format!("{}: {e}; its log:\n{}", self.name, self.err_log())),
        }
    }

    fn pids(&self) -> Vec<u32> {
        self.proc.iter().map(Proc::pid).collect()
    }
}

/// `shards × replicas` ClickHouse processes and one ZooKeeper, configured as the cluster
/// [`CLUSTER_NAME`] with `internal_replication` and `{shard}`/`{replica}` macros
/// (`01`/`s1r1`, ...).
pub struct Cluster {
    pub zookeeper: ZooKeeper,
    /// By shard, then replica: `nodes[shard * replicas + replica]`.
    pub nodes: Vec<ClickHouse>,
    pub shards: usize,
    pub replicas: usize,
    /// How long `start` took, from nothing to every node answering.
    pub started_in: Duration,
    dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start(shards: usize, replicas: usize) -> Result<Cluster, String> {
        let began = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("ugc-cluster-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let zookeeper = ZooKeeper::start(&dir.path().join("zookeeper"))?;
        let topology: Vec<Vec<u16>> = (0..shards)
            .map(|_| (0..replicas).map(|_| free_port()).collect())
            .collect();
        let mut nodes = Vec::new();
        for shard in 0..shards {
            for replica in 0..replicas {
                let m = Membership {
                    zookeeper_port: zookeeper.port,
                    shard,
                    replica,
                    topology: topology.clone(),
                };
                let name = format!("s{}r{}", shard + 1, replica + 1);
                nodes.push(ClickHouse::configure(dir.path(), &name, Some(&m), "")?);
            }
        }
        // All processes first, then one wait: the nodes start in parallel.
        for n in &mut nodes {
            n.spawn()?;
        }
        let deadline = Instant::now() + START_DEADLINE;
        for n in &mut nodes {
            n.wait_ready(deadline)?;
        }
        Ok(Cluster {
            zookeeper,
            nodes,
            shards,
            replicas,
            started_in: began.elapsed(),
            dir,
        })
    }

    /// The node ugc talks to: shard 1, replica 1.
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    pub fn node(&mut self, shard: usize, replica: usize) -> &mut ClickHouse {
        &mut self.nodes[shard * self.replicas + replica]
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn pids(&self) -> Vec<u32> {
        let mut p = self.zookeeper.pids();
        for n in &self.nodes {
            p.extend(n.pids());
        }
        p
    }
}

/// Removes `dir` once the test process is gone and the servers in it have died (their
/// own watchdogs kill them): for servers in a `static`, whose destructors never run.
pub(crate) struct Reaper {
    _child: Child,
    _pipe: ChildStdin,
}

pub(crate) fn reaper(dir: &Path, pids: &[u32]) -> Result<Reaper, String> {
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(
            r#"read _ ; dir="$0"; shift
               for p in "$@"; do n=0; while kill -0 "$p" 2>/dev/null && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done; done
               rm -rf -- "$dir""#,
        )
        .arg(dir)
        .args(&pids)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start a reaper: {e}"))?;
    let pipe = child.stdin.take().expect("piped stdin");
    Ok(Reaper {
        _child: child,
        _pipe: pipe,
    })
}

/// A server or cluster that lives as long as the test process.
pub struct SharedServer {
    /// The HTTP URL ugc talks to.
    pub url: String,
    /// `Some` for a cluster: its name in `remote_servers`.
    pub cluster: Option<&'static str>,
    _single: Option<ClickHouse>,
    _cluster: Option<Cluster>,
    _reaper: Reaper,
}

/// One stand-alone server for the whole test process, started on first use.
pub fn shared_single() -> &'static SharedServer {
    static SHARED: OnceLock<SharedServer> = OnceLock::new();
    SHARED.get_or_init(|| {
        let mut server = ClickHouse::start_single()
            .unwrap_or_else(|e| panic!("cannot start a ClickHouse server: {e}"));
        let temp = server.temp.take().expect("own temp dir").keep();
        let reaper = reaper(&temp, &server.pids()).unwrap_or_else(|e| panic!("{e}"));
        SharedServer {
            url: server.url(),
            cluster: None,
            _single: Some(server),
            _cluster: None,
            _reaper: reaper,
        }
    })
}

/// One 2 shards × 2 replicas cluster for the whole test process, started on first use.
pub fn shared_cluster() -> &'static SharedServer {
    static SHARED: OnceLock<SharedServer> = OnceLock::new();
    SHARED.get_or_init(|| {
        let cluster = Cluster::start(2, 2)
            .unwrap_or_else(|e| panic!("cannot start a ClickHouse cluster: {e}"));
        eprintln!(
            "ClickHouse cluster (2 shards x 2 replicas + ZooKeeper) up in {:?}",
            cluster.started_in
        );
        let reaper = reaper(cluster.dir(), &cluster.pids()).unwrap_or_else(|e| panic!("{e}"));
        SharedServer {
            url: cluster.url(),
            cluster: Some(CLUSTER_NAME),
            _single: None,
            _cluster: Some(cluster),
            _reaper: reaper,
        }
    })
}
