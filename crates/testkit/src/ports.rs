//! Ports for servers started by tests.
//!
//! `bind(127.0.0.1:0)` hands out a port from the kernel's ephemeral range, the same range
//! every outgoing connection (a ZooKeeper client, a readiness probe) takes its local port
//! from, and the kernel may hand the same port out again once it is released: a server
//! started on such a port seconds later can find it taken ("Address already in use").
//! So ports come from below the ephemeral range, each at most once per test process, and
//! only when nothing listens on them right now.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// The lowest port handed out: above the registered services most machines run.
const LOWEST: u16 = 20_000;

/// A port nothing listens on, never handed out before by this process, outside the
/// kernel's ephemeral range.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let below = ephemeral_start().max(LOWEST + 1_000);
    let span = u32::from(below - LOWEST);
    // Different test processes start at different points, so that they rarely race
    // for the same port between the check and the server's own bind.
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id().wrapping_mul(2_654_435_761);
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    for i in 0..span {
        let port = LOWEST + ((seed.wrapping_add(i)) % span) as u16;
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free port in {LOWEST}..{below}");
}

/// The first port of the kernel's ephemeral range (Linux's default when unreadable).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_never_handed_out_twice_and_stay_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..500).map(|_| free_port()).collect();
        let unique: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(unique.len(), ports.len());
        assert!(
            ports
                .iter()
                .all(|&p| p >= LOWEST && p < ephemeral_start().max(LOWEST + 1_000))
        );
    }
}
