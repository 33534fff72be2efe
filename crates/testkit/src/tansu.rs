//! tansu, a broker speaking the Apache Kafka protocol, as a child process.
//!
//! `scripts/fetch-tansu` builds it once into the cache (`$UGC_TANSU` overrides the path).
//! [`Storage::Memory`] forgets everything when the process ends; [`Storage::Sqlite`]
//! keeps topics, records and committed offsets in a file, so [`Tansu::restart`] after
//! [`Tansu::kill`] comes back with the data — what a broker outage test needs.

use std::fs::OpenOptions;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::ports::free_port;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// Fast, but tansu 0.6's memory engine (dynostore) answers a fetch from an offset
    /// inside a stored record batch with the batches *after* it: a consumer resuming at a
    /// commit that fell mid-batch silently skips the rest of that batch (Kafka returns
    /// the whole batch and the client drops the records before the offset). Fine for a
    /// consumer that reads on from where it is; a test where members resume at commits
    /// (rebalances, restarts) needs [`Storage::Sqlite`], which stores record by record.
    Memory,
    /// A SQLite file in the broker's own temporary directory.
    Sqlite,
}

pub struct Tansu {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    storage: Storage,
}

/// A record read back from a topic.
#[derive(Clone, Debug)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Tansu {
    /// The broker binary; panics with the install command when it is missing.
    pub fn binary() -> PathBuf {
        Self::find_binary().unwrap_or_else(|e| panic!("{e}"))
    }

    /// The broker binary, or what to do to install it.
    pub fn find_binary() -> Result<PathBuf, String> {
        let path = std::env::var_os("UGC_TANSU")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                ugc_chdb::cache_dir()
                    .join("tansu")
                    .join("bin")
                    .join("tansu")
            });
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "the tansu broker is not installed at {}: run scripts/fetch-tansu \
                 (scripts/test does), or set UGC_TANSU",
                path.display()
            ))
        }
    }

    /// Starts a broker on a free port and waits until it answers Kafka requests.
    pub fn start(storage: Storage) -> Tansu {
        let mut t = Tansu {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            storage,
        };
        t.spawn();
        t
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("tansu.log")
    }

    /// Everything the broker printed.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        // The SQLite URL is relative to the working directory: run in the temp dir.
        let storage = match self.storage {
            Storage::Memory => "memory://tansu/",
            Storage::Sqlite => "sqlite://tansu.db",
        };
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("tansu log file");
        let child = Command::new(Self::binary())
            .current_dir(self.dir.path())
            // `UGC_TEST_TANSU_LOG=info` (or `debug`) shows the group coordinator's
            // decisions (members expired, generations) when a group test fails.
            .env(
                "RUST_LOG",
                std::env::var("UGC_TEST_TANSU_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", storage])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("tansu log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", Self::binary().display()));
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "tansu exited during start-up ({status}); its log:\n{}",
                    self.log()
                );
            }
            let listening = TcpStream::connect_timeout(
                &([127, 0, 0, 1], self.port).into(),
                Duration::from_millis(200),
            )
            .is_ok();
            if listening && self.metadata_answers() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "tansu did not answer on port {} within 30 s; its log:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn metadata_answers(&self) -> bool {
        let Ok(p) = self.client().create::<BaseProducer>() else {
            return false;
        };
        p.client()
            .fetch_metadata(None, Duration::from_secs(2))
            .is_ok()
    }

    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.brokers())
            .set("reconnect.backoff.max.ms", "500");
        c
    }

    /// kill -9: the broker stops answering at once, with no shutdown of its own.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the broker again on the same port with the same storage.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The broker's process id while it runs (for CPU accounting).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Writes one record straight to a topic partition (bypassing ugc), and waits for it.
    pub fn produce(&self, topic: &str, partition: i32, key: Option<&[u8]>, payload: &[u8]) {
        let p: BaseProducer = self.client().set("acks", "all").create().expect("producer");
        let mut r = BaseRecord::<[u8], [u8]>::to(topic)
            .partition(partition)
            .payload(payload);
        if let Some(k) = key {
            r = r.key(k);
        }
        p.send(r).map_err(|(e, _)| e).expect("produce");
        p.flush(Duration::from_secs(10)).expect("flush");
    }

    /// Every record of `topic` (all `partitions`) from the beginning, read until no more
    /// arrive for a moment or `within` passes.
    pub fn read_all(&self, topic: &str, partitions: i32, within: Duration) -> Vec<Record> {
        let c: BaseConsumer = self
            .client()
            .set("group.id", "ugc-testkit-reader")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .expect("partition");
        }
        c.assign(&tpl).expect("assign");
        let deadline = Instant::now() + within;
        let mut out = Vec::new();
        let mut quiet_since = Instant::now();
        while Instant::now() < deadline && quiet_since.elapsed() < Duration::from_secs(2) {
            match c.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    quiet_since = Instant::now();
                    let headers = m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| {
                                    (
                                        h.key.to_owned(),
                                        String::from_utf8_lossy(h.value.unwrap_or_default())
                                            .into_owned(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    out.push(Record {
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        payload: m.payload().unwrap_or_default().to_vec(),
                        headers,
                    });
                }
                Some(Err(e)) => eprintln!("reading {topic}: {e}"),
                None => {}
            }
        }
        out
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
    }
}
