//! Black-box: kill -9 at random moments under load. Every event the API acknowledged
//! (202) must end up in the store exactly once after restarts on the same data dir.

mod common;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::load::{Load, Refusal, Spec, assert_exactly_once};
use common::{Server, new_user};
use ugc_testkit::Rng;

/// Acknowledged events wanted before the load stops.
const TARGET_ACKED: u64 = 100_000;
/// Kills wanted before the load stops (at least 3; more costs a few seconds each).
const MIN_KILLS: u32 = 5;
const LOAD_TASKS: usize = 8;
const BATCH: (u64, u64) = (200, 500);
const KILL_DELAY_MS: (u64, u64) = (300, 2500);

fn log_tail(server: &Server) -> String {
    let log = server.log();
    let lines: Vec<&str> = log.lines().collect();
    let from = lines.len().saturating_sub(60);
    format!(
        "--- last {} lines of the server log ---\n{}",
        lines.len() - from,
        lines[from..].join("\n")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_kill_9_exactly_once() {
    let began = Instant::now();
    let seed = std::env::var("UGC_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("crash test seed: {seed} (rerun with UGC_CRASH_SEED={seed})");
    let mut rng = Rng::new(seed);

    let mut server = Server::start(&["--query-max-rows", "1000000"]).await;
    let user = new_user();
    let load = Load::start(
        &server,
        Spec {
            batch: BATCH,
            seed,
            refusal: Refusal::ServerMayDie,
            ..Spec::new(vec![vec![server.token(&user, &[])]], LOAD_TASKS, 0)
        },
    );
    let shared = load.shared.clone();

    // Kill at random moments while acknowledgements flow, until both goals are met.
    let mut kills = 0u32;
    let mut restarts = Duration::ZERO;
    loop {
        if let Some(f) = shared.failure() {
            panic!("{f}\n{}", log_tail(&server));
        }
        let acked = shared.acked();
        if acked >= TARGET_ACKED && kills >= MIN_KILLS {
            break;
        }
        // The load must be flowing on this server process before it is killed.
        let before = acked;
        let deadline = Instant::now() + Duration::from_secs(60);
        while shared.acked() == before {
            if let Some(f) = shared.failure() {
                panic!("{f}\n{}", log_tail(&server));
            }
            assert!(
                Instant::now() < deadline,
                "no batch was acknowledged within 60 s after (re)start ({kills} kills so far)\n{}",
                log_tail(&server)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let delay = rng.range(KILL_DELAY_MS.0, KILL_DELAY_MS.1);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        if shared.acked() >= TARGET_ACKED && kills >= MIN_KILLS {
            break;
        }
        server.kill9();
        kills += 1;
        let at = shared.acked();
        let t = Instant::now();
        server.restart().await;
        restarts += t.elapsed();
        println!(
            "kill #{kills}: {delay} ms into the load on that process, {at} acknowledged so far; \
             restart took {:?}",
            t.elapsed()
        );
    }
    let acked: HashSet<String> = load.stop().await;
    let load_time = began.elapsed();
    println!(
        "load stopped after {load_time:?}: {} acknowledged, {} requests ({} events) unacknowledged, \
         {kills} kills, {restarts:?} spent restarting",
        acked.len(),
        shared.unanswered.load(Ordering::SeqCst),
        shared.unacked_events.load(Ordering::SeqCst),
    );

    // Every acknowledged event stored, the loader past a marker posted after the load,
    // and each event once.
    let users = [user];
    let logs = || log_tail(&server);
    let within = Duration::from_secs(180);
    let stored = assert_exactly_once(&server, &users, &acked, within, "after the load", logs).await;
    let unacked_stored = stored.keys().filter(|id| !acked.contains(*id)).count();
    let caught_up = began.elapsed();

    // One more kill -9 at rest: recovery must not load anything a second time.
    server.kill9();
    kills += 1;
    server.restart().await;
    let logs = || log_tail(&server);
    let again = assert_exactly_once(
        &server,
        &users,
        &acked,
        within,
        "after a kill at rest",
        logs,
    )
    .await;
    assert_eq!(
        again.len(),
        stored.len() + 1,
        "the stored set changed after a kill at rest (beyond its one new marker)"
    );

    println!(
        "crash test (seed {seed}): acknowledged {}, stored {} (each once), \
         unacknowledged-but-stored {unacked_stored}, unacknowledged requests {} ({} events), \
         kills {kills} ({} during load), caught up after {caught_up:?}, elapsed {:?}",
        acked.len(),
        stored.len(),
        shared.unanswered.load(Ordering::SeqCst),
        shared.unacked_events.load(Ordering::SeqCst),
        kills - 1,
        began.elapsed()
    );
}
