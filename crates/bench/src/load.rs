//! The load generator: one task per connection (or appender), closed loop as fast as
//! possible or open loop at a fixed rate; a warm-up, then a measured window with a
//! latency histogram, a throughput timeline, and the CPU both sides used.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use ugc_log::{LogProducer, OutRecord};

use crate::client::Conn;
use crate::procs;
use crate::progress::{Progress, thousands};

/// One unit of load: a request, or an append.
pub trait Worker: Send + 'static {
    /// Does unit `i` (workers stride through a shared pool); returns the events it carried.
    fn call(&mut self, i: u64) -> impl Future<Output = Result<u64, String>> + Send;

    /// Which route unit `i` is, for per-route latency (a mixed load has several).
    fn route(&self, _i: u64) -> usize {
        0
    }
}

/// Keep-alive HTTP requests from a pool; success is the one expected status.
pub struct HttpWorker {
    pub conn: Conn,
    pub pool: Arc<Vec<Vec<u8>>>,
    pub events_per_request: u64,
    pub expect: u16,
}

impl HttpWorker {
    pub fn many(
        addr: SocketAddr,
        n: usize,
        pool: &Arc<Vec<Vec<u8>>>,
        events_per_request: u64,
    ) -> Vec<Self> {
        (0..n)
            .map(|_| HttpWorker {
                conn: Conn::new(addr),
                pool: pool.clone(),
                events_per_request,
                expect: 202,
            })
            .collect()
    }
}

impl Worker for HttpWorker {
    fn call(&mut self, i: u64) -> impl Future<Output = Result<u64, String>> + Send {
        let HttpWorker {
            conn,
            pool,
            events_per_request,
            expect,
        } = self;
        async move {
            let req = &pool[(i % pool.len() as u64) as usize];
            match conn.send(req).await {
                Ok(s) if s == *expect => Ok(*events_per_request),
                Ok(s) => Err(format!(
                    "HTTP {s}: {}",
                    String::from_utf8_lossy(&conn.body()[..conn.body().len().min(300)])
                )),
                Err(e) => Err(e.to_string()),
            }
        }
    }
}

/// Appends pre-encoded records straight to the embedded log: no HTTP, no parsing.
pub struct LogWorker {
    pub producer: Arc<dyn LogProducer>,
    pub pool: Arc<Vec<Vec<OutRecord>>>,
}

impl Worker for LogWorker {
    fn call(&mut self, i: u64) -> impl Future<Output = Result<u64, String>> + Send {
        // append takes ownership; copying a batch is noise next to its fsync.
        let records = self.pool[(i % self.pool.len() as u64) as usize].clone();
        let n = records.len() as u64;
        let producer = self.producer.clone();
        async move {
            producer
                .append(records)
                .await
                .map(|()| n)
                .map_err(|e| e.to_string())
        }
    }
}

pub struct PhaseSpec {
    pub label: String,
    pub warmup: Duration,
    pub duration: Duration,
    /// Units per second over all workers; `None`: as fast as they go.
    pub rate: Option<f64>,
    /// The process under test, whose CPU and memory are read (default: this one).
    pub server_pid: Option<u32>,
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub samples: u64,
}

impl Percentiles {
    /// From a histogram of microseconds.
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Self {
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            p999: ms(0.999),
            max: h.max() as f64 / 1000.0,
            samples: h.len(),
        }
    }
}

pub fn histogram() -> Histogram<u64> {
    // 1 µs .. 10 min at 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

pub struct PhaseResult {
    /// Successful events over the whole phase, warm-up and tail included (what the store
    /// must hold afterwards).
    pub ok_events: u64,
    /// Successful units and their events inside the measured window.
    pub units: u64,
    pub events: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub secs: f64,
    pub hist: Histogram<u64>,
    /// The latencies of each route (see [`Worker::route`]), indexed by route.
    pub routes: Vec<Histogram<u64>>,
    /// (seconds into the measured window, events per second).
    pub timeline: Vec<(f64, f64)>,
    pub server_cpu_cores: Option<f64>,
    pub client_cpu_cores: Option<f64>,
    pub others_cpu_cores: Option<f64>,
}

impl PhaseResult {
    pub fn units_per_sec(&self) -> f64 {
        self.units as f64 / self.secs
    }
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.secs
    }
    pub fn latency(&self) -> Percentiles {
        Percentiles::of(&self.hist)
    }
}

// The state starts at 0: warming up.
const MEASURE: u8 = 1;
const STOP: u8 = 2;

#[derive(Default)]
struct Shared {
    state: AtomicU8,
    ok_events: AtomicU64,
    units: AtomicU64,
    events: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

async fn drive<W: Worker>(
    mut w: W,
    idx: usize,
    n: usize,
    rate: Option<f64>,
    shared: Arc<Shared>,
    start: Instant,
) -> Vec<Histogram<u64>> {
    let mut routes: Vec<Histogram<u64>> = vec![];
    // Open loop: each worker owns every n-th slot of the schedule, so the total rate holds
    // however slow single answers are; latency counts from the slot, not from the send
    // (a late send is the server's delay too: no coordinated omission).
    let interval = rate.map(|r| Duration::from_secs_f64(n as f64 / r));
    let mut next = start + interval.map_or(Duration::ZERO, |iv| iv.mul_f64(idx as f64 / n as f64));
    let mut i = idx as u64;
    loop {
        if shared.state.load(Ordering::Relaxed) == STOP {
            break;
        }
        let began = match interval {
            Some(iv) => {
                if next > Instant::now() {
                    tokio::time::sleep_until(next.into()).await;
                    if shared.state.load(Ordering::Relaxed) == STOP {
                        break;
                    }
                }
                let slot = next;
                next += iv;
                slot
            }
            None => Instant::now(),
        };
        let route = w.route(i);
        let r = tokio::time::timeout(Duration::from_secs(60), w.call(i)).await;
        i += n as u64;
        let r = r.unwrap_or_else(|_| Err("no answer within 60 s".into()));
        match r {
            Ok(events) => {
                shared.ok_events.fetch_add(events, Ordering::Relaxed);
                if shared.state.load(Ordering::Relaxed) == MEASURE {
                    if routes.len() <= route {
                        routes.resize_with(route + 1, histogram);
                    }
                    routes[route].saturating_record(began.elapsed().as_micros() as u64);
                    shared.units.fetch_add(1, Ordering::Relaxed);
                    shared.events.fetch_add(events, Ordering::Relaxed);
                }
            }
            Err(e) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                {
                    let mut first = shared.first_error.lock().unwrap_or_else(|p| p.into_inner());
                    if first.is_none() {
                        *first = Some(e);
                    }
                }
                // A server that refuses must not turn the generator into a busy loop.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    routes
}

pub async fn run<W: Worker>(spec: &PhaseSpec, workers: Vec<W>, progress: &Progress) -> PhaseResult {
    let shared = Arc::new(Shared::default());
    let start = Instant::now();
    let n = workers.len();
    let tasks: Vec<_> = workers
        .into_iter()
        .enumerate()
        .map(|(i, w)| tokio::spawn(drive(w, i, n, spec.rate, shared.clone(), start)))
        .collect();
    let me = std::process::id();
    let server = spec.server_pid.unwrap_or(me);
    let tick = Duration::from_millis(250);
    let status = |what: &str, t: f64, total: f64, rate: f64, shared: &Shared| {
        format!(
            "  {} · {what} {t:.1}/{total:.1} s · {} events/s · errors {}",
            spec.label,
            thousands(rate),
            shared.errors.load(Ordering::Relaxed)
        )
    };

    let warm_end = start + spec.warmup;
    let mut last = (Instant::now(), 0u64);
    while Instant::now() < warm_end {
        tokio::time::sleep(tick.min(warm_end - Instant::now())).await;
        let now = Instant::now();
        let done = shared.ok_events.load(Ordering::Relaxed);
        let rate = (done - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-6);
        last = (now, done);
        progress.update(&status(
            "warming up",
            start.elapsed().as_secs_f64(),
            spec.warmup.as_secs_f64(),
            rate,
            &shared,
        ));
    }

    let cpu0 = (procs::cpu_secs(server), procs::cpu_secs(me));
    let others0 = procs::others_cpu_secs();
    let t0 = Instant::now();
    shared.state.store(MEASURE, Ordering::Relaxed);
    let end = t0 + spec.duration;
    let mut timeline = Vec::new();
    let mut last = (t0, 0u64);
    while Instant::now() < end {
        tokio::time::sleep(tick.min(end - Instant::now())).await;
        let now = Instant::now();
        let done = shared.events.load(Ordering::Relaxed);
        let rate = (done - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-6);
        last = (now, done);
        timeline.push(((now - t0).as_secs_f64(), rate));
        progress.update(&status(
            "measuring",
            (now - t0).as_secs_f64(),
            spec.duration.as_secs_f64(),
            rate,
            &shared,
        ));
    }
    shared.state.store(STOP, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let cpu1 = (procs::cpu_secs(server), procs::cpu_secs(me));
    let others1 = procs::others_cpu_secs();
    let mut hist = histogram();
    let mut routes: Vec<Histogram<u64>> = vec![];
    for t in tasks {
        if let Ok(hs) = t.await {
            if routes.len() < hs.len() {
                routes.resize_with(hs.len(), histogram);
            }
            for (r, h) in hs.iter().enumerate() {
                let _ = hist.add(h);
                let _ = routes[r].add(h);
            }
        }
    }
    let cores = |a: Option<f64>, b: Option<f64>| Some((b? - a?) / secs);
    let result = PhaseResult {
        ok_events: shared.ok_events.load(Ordering::Relaxed),
        units: shared.units.load(Ordering::Relaxed),
        events: shared.events.load(Ordering::Relaxed),
        errors: shared.errors.load(Ordering::Relaxed),
        first_error: shared.first_error.lock().ok().and_then(|e| e.clone()),
        secs,
        hist,
        routes,
        timeline,
        // When the load runs in-process there is no separate server to tell apart.
        server_cpu_cores: cores(cpu0.0, cpu1.0),
        client_cpu_cores: if server == me {
            None
        } else {
            cores(cpu0.1, cpu1.1)
        },
        // Whatever else ran meanwhile: figures taken beside a busy neighbour are suspect.
        others_cpu_cores: Some(((others1 - others0) / secs).max(0.0)),
    };
    progress.done(&format!(
        "  {}: {} events/s ({} units/s), p50 {:.2} ms, p99 {:.2} ms, errors {}",
        spec.label,
        thousands(result.events_per_sec()),
        thousands(result.units_per_sec()),
        result.latency().p50,
        result.latency().p99,
        result.errors
    ));
    result
}
