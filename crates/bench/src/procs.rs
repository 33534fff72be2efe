//! Child processes of the suite and what `/proc` says about them.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::client;
use crate::workload::SECRET;
use crate::{ChildKind, Plan};

/// `VmRSS`, `VmHWM`, ... of a process, in bytes.
pub fn status_bytes(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line[key.len()..]
        .trim_start_matches(':')
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// CPU seconds (user + system, all threads) a process has used so far.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields are counted after its closing paren.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux target this runs on.
    Some(ticks as f64 / 100.0)
}

/// CPU seconds used so far by every other user-space process on the machine: all but
/// this one and its children, with what each has reaped from its own children. Kernel
/// threads (page write-back, for one) are left out: they work for us too.
pub fn others_cpu_secs() -> f64 {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let mut ticks = 0u64;
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = text.rfind(')') else {
            continue;
        };
        let f: Vec<u64> = text[close + 2..]
            .split_whitespace()
            .skip(1)
            .take(14)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        const PF_KTHREAD: u64 = 0x0020_0000;
        if f.len() < 14 || pid == me || f[0] == me as u64 || f[5] & PF_KTHREAD != 0 {
            continue;
        }
        ticks += f[10] + f[11] + f[12] + f[13];
    }
    ticks as f64 / 100.0
}

/// The test kit's port picker: below the kernel's ephemeral range, never one twice.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(ugc_testkit::free_port())
}

/// A child that is killed when dropped, whatever happened to the run.
pub struct Proc {
    child: Child,
    name: String,
    log: PathBuf,
    /// Kept open: a role process exits when its stdin closes, i.e. when we die.
    _stdin: Option<ChildStdin>,
    stdout: Option<BufReader<ChildStdout>>,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn rss(&self) -> Option<u64> {
        status_bytes(self.pid(), "VmRSS")
    }

    pub fn peak_rss(&self) -> Option<u64> {
        status_bytes(self.pid(), "VmHWM")
    }

    /// The last lines of the child's stderr, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!(
                "{} exited ({status}); its log ends with:\n{}",
                self.name,
                self.log_tail()
            )),
            _ => None,
        }
    }

    /// The next JSON message a role prints on stdout, or an error when it exits first.
    pub fn message(&mut self) -> anyhow::Result<Value> {
        let Some(out) = self.stdout.as_mut() else {
            bail!("{} has no message channel", self.name)
        };
        let mut line = String::new();
        loop {
            line.clear();
            if out.read_line(&mut line)? == 0 {
                let _ = self.child.wait();
                bail!(
                    "{}",
                    self.exited()
                        .unwrap_or_else(|| format!("{} closed its output", self.name))
                );
            }
            // Anything that is not one of our messages (a library's chatter) is skipped.
            if let Ok(v) = serde_json::from_str::<Value>(line.trim())
                && v.is_object()
            {
                return Ok(v);
            }
        }
    }

    /// Waits for a role that reported its result to exit (a log file it held is free
    /// then); one that lingers in its library's exit handlers is killed.
    pub fn wait(mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        Ok(())
    }

    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn spawn(mut cmd: Command, name: &str, log: &Path, messages: bool) -> anyhow::Result<Proc> {
    let log_file =
        std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    cmd.stderr(log_file)
        .stdin(Stdio::piped())
        .stdout(if messages {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    Ok(Proc {
        _stdin: child.stdin.take(),
        stdout: child.stdout.take().map(BufReader::new),
        child,
        name: name.to_owned(),
        log: log.to_owned(),
    })
}

/// `ugc serve` on a free port with its own data directory, ready to serve: all-in-one,
/// or the role `envs` give it (`UGC_ROLE`).
pub struct Server {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl Server {
    pub fn start(
        plan: &Plan,
        dir: &Path,
        extra: &[String],
        envs: &[(&str, &str)],
    ) -> anyhow::Result<Server> {
        std::fs::create_dir_all(dir)?;
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let mut cmd = Command::new(&plan.ugc_exe);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--jwt-secret")
            .arg(SECRET)
            .arg("--chdb-lib")
            .arg(&plan.chdb_lib)
            .args(extra)
            .envs(envs.iter().copied());
        let proc = spawn(cmd, "ugc serve", &dir.join("serve.log"), false)?;
        let mut server = Server { proc, addr };
        server.wait_ready(Duration::from_secs(180))?;
        Ok(server)
    }

    fn wait_ready(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(why) = self.proc.exited() {
                bail!("{why}");
            }
            if let Ok((200, _)) = client::request(self.addr, "GET", "/readyz", None, None) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "ugc serve not ready within {within:?}; its log ends with:\n{}",
                    self.proc.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A hidden role of `ugc-bench` in a child process; it reports on stdout.
pub fn start_child(
    plan: &Plan,
    kind: ChildKind,
    dir: &Path,
    extra: &[String],
) -> anyhow::Result<Proc> {
    std::fs::create_dir_all(dir)?;
    let name = format!("{kind:?}");
    let mut cmd = Command::new(&plan.exe);
    cmd.arg("--internal-child")
        .arg(
            clap::ValueEnum::to_possible_value(&kind)
                .map(|v| v.get_name().to_owned())
                .unwrap_or_default(),
        )
        .arg("--internal-dir")
        .arg(dir)
        .args(extra)
        .env("UGC_CHDB_LIB", &plan.chdb_lib);
    spawn(cmd, &name, &dir.join(format!("{name}.log")), true)
}
