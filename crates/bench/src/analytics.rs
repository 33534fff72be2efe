//! Scenario 8: the analytics API over 10,000,000 events on chDB. `ugc serve` (all-in-one,
//! embedded log and chDB) ingests the events over HTTP, spread over the last six days;
//! once the store holds them all, each analytics route is asked again and again, one
//! request at a time; the baseline is the very statement the answer says it ran (`sql`),
//! sent as an analyst's SQL through `POST /api/v1/query` on the same server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use ugc_model::UserId;

use super::{Ctx, wait_stored};
use crate::client::Conn;
use crate::load::Percentiles;
use crate::procs::Server;
use crate::progress::thousands;
use crate::report::{Measure, Outcome, Target};
use crate::workload::{self, Rng, Workload, http_request};

/// The routes asked, each its own outcome (`8a`, `8b`, …); `{film}` is the most viewed
/// film.
const ROUTES: [&str; 16] = [
    "films/top?by=views",
    "films/top?by=viewers",
    "films/top?by=completion",
    "films/top?by=watch_time",
    "films/{film}/dropoff",
    "films/{film}/summary",
    "quality?group_by=hour",
    "quality?group_by=day",
    "qoe?group_by=day",
    "qoe?group_by=film",
    "audience?group_by=day",
    "audience?group_by=week",
    "audience?group_by=month",
    "pages?group_by=page",
    "pages?group_by=day",
    "content/top?by=rating",
];

pub(super) const IDS: [&str; 16] = [
    "8a", "8b", "8c", "8d", "8e", "8f", "8g", "8h", "8i", "8j", "8k", "8l", "8m", "8n", "8o", "8p",
];

/// The scenario's label, as `--backends analytics` names it.
pub(super) const LABEL: &str = "analytics on chDB";

pub(super) fn title(id: &str) -> Option<&'static str> {
    let i = IDS.iter().position(|x| *x == id)?;
    Some(
        [
            "analytics: films/top by views",
            "analytics: films/top by viewers",
            "analytics: films/top by completion",
            "analytics: films/top by watch time",
            "analytics: a film's drop-off",
            "analytics: a film's summary",
            "analytics: quality by hour",
            "analytics: quality by day",
            "analytics: QoE by day",
            "analytics: QoE by film",
            "analytics: audience by day",
            "analytics: audience by week",
            "analytics: audience by month",
            "analytics: pages by page",
            "analytics: pages by day",
            "analytics: content/top by rating",
        ][i],
    )
}

/// Events per batch request while loading.
const BATCH: u64 = 100;
/// Concurrent connections while loading.
const LOADERS: usize = 16;
const HOUR_MS: i64 = 3600 * 1000;
const DAY_MS: i64 = 24 * HOUR_MS;

pub(super) fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let plan = ctx.plan;
    let n = plan.analytics_events;
    // A kept data dir is reused when it holds this many events: loading is most of the
    // scenario's time, and the statements are what changes between runs.
    let (dir, keep) = match &plan.analytics_data {
        Some(d) => (d.clone(), true),
        None => (ctx.work.join("analytics"), false),
    };
    let marker = dir.join("loaded.json");
    let loaded: Option<Value> = std::fs::read(&marker)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(|m: &Value| m["events"].as_u64() == Some(n / BATCH * BATCH));
    if loaded.is_none() && dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let server = Server::start(plan, &dir, &[], &[])?;
    let (sent, now_ms, load_secs, stored_secs) = match loaded {
        Some(m) => {
            let sent = m["events"].as_u64().context("loaded.json: events")?;
            let at = m["at_ms"].as_i64().context("loaded.json: at_ms")?;
            ctx.progress.done(&format!(
                "scenario 8: {} events already loaded in {}",
                thousands(sent as f64),
                dir.display()
            ));
            wait_stored(ctx, &server, sent)?;
            let secs = |k: &str| m[k].as_f64().unwrap_or(f64::NAN);
            (sent, at, secs("load_secs"), secs("stored_secs"))
        }
        None => {
            ctx.progress.done(&format!(
                "scenario 8: loading {} events over HTTP, as viewings over the last 6 days",
                thousands(n as f64)
            ));
            let now_ms = ugc_model::Timestamp::now().millis();
            let t0 = Instant::now();
            let sent = ctx.client.block_on(ingest(ctx, server.addr, n, now_ms))?;
            let load_secs = t0.elapsed().as_secs_f64();
            wait_stored(ctx, &server, sent)?;
            let stored_secs = t0.elapsed().as_secs_f64();
            if keep {
                std::fs::write(
                    &marker,
                    serde_json::to_vec(&json!({"events": sent, "at_ms": now_ms,
                        "load_secs": load_secs, "stored_secs": stored_secs}))?,
                )?;
            }
            (sent, now_ms, load_secs, stored_secs)
        }
    };
    ctx.progress.done(&format!(
        "  {} events acknowledged in {load_secs:.0} s, all stored after {stored_secs:.0} s",
        thousands(sent as f64)
    ));
    // The default period (the last 7 days) as of loading, so a kept load answers alike.
    let period = format!(
        "from={}&to={}",
        workload::rfc3339(now_ms - 7 * DAY_MS)?,
        workload::rfc3339(now_ms)?
    );

    let analyst = workload::token(
        &UserId::parse("ugc-bench-analyst").map_err(anyhow::Error::msg)?,
        &["analyst".into()],
    )?;
    let host = server.addr.to_string();
    let reps = if plan.quick { 3 } else { 30 };
    let film = ctx
        .client
        .block_on(top_film(server.addr, &host, &analyst, &period))?;
    for (i, route) in ROUTES.iter().enumerate() {
        let id = IDS[i];
        let sep = if route.contains('?') { '&' } else { '?' };
        let path = format!(
            "/api/v1/analytics/{}{sep}{period}",
            route.replace("{film}", &film)
        );
        ctx.progress
            .done(&format!("scenario 8: {path}, {reps} times each way"));
        let outcome = ctx
            .client
            .block_on(measure_route(server.addr, &host, &analyst, &path, reps));
        let o = match outcome {
            Ok((api, raw)) => {
                let mut o = Outcome::new(id, title(id).unwrap_or(route), LABEL).measured(
                    latency(&format!("GET {path} p99"), &api),
                    latency("its `sql` through POST /api/v1/query, p99", &raw),
                );
                o.more
                    .push(Measure::new(format!("GET {path} p50"), api.p50, "ms"));
                o.target = Some(Target {
                    text: "p99 < 200 ms".into(),
                    met: api.p99 < 200.0,
                });
                o
            }
            Err(e) => Outcome::failed(id, title(id).unwrap_or(route), LABEL, &e),
        };
        ctx.put(o);
    }
    let mut first = ctx
        .outcomes
        .remove(&super::key(IDS[0], LABEL))
        .context("8a")?;
    first.more.push(Measure::new(
        format!("{} events loaded over HTTP", thousands(sent as f64)),
        load_secs,
        "s",
    ));
    first
        .more
        .push(Measure::new("until all were stored", stored_secs, "s"));
    ctx.put(first);
    server.proc.stop();
    if !keep {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}

fn latency(what: &str, p: &Percentiles) -> Measure {
    let mut m = Measure::new(what, p.p99, "ms");
    m.latency_ms = Some(p.clone());
    m
}

/// Sends `n` events (rounded down to whole batches) in batches of [`BATCH`] from
/// [`LOADERS`] connections; how many were acknowledged.
async fn ingest(ctx: &Ctx<'_>, addr: SocketAddr, n: u64, now_ms: i64) -> anyhow::Result<u64> {
    let requests = n / BATCH;
    let next = Arc::new(AtomicU64::new(0));
    let host = addr.to_string();
    // Many viewers: each batch is one viewing, as a player sends it.
    let workload = Arc::new(Workload::new((requests as usize / 5).max(50), true)?);
    let mut tasks = Vec::new();
    for t in 0..LOADERS {
        let (next, workload, host) = (next.clone(), workload.clone(), host.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(addr);
            let mut rng = Rng::new(0xa11a ^ t as u64);
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= requests {
                    return anyhow::Ok(());
                }
                let user = &workload.users[(i as usize) % workload.users.len()];
                // Batches start in time order over the six days (as live traffic would
                // arrive) and end before now.
                let span = (6 * DAY_MS - 6 * HOUR_MS) as u64;
                let start = now_ms - 6 * DAY_MS
                    + (span * i / requests) as i64
                    + rng.below(HOUR_MS as u64) as i64;
                let events = workload.viewings(&mut rng, BATCH as usize, start)?;
                let body = serde_json::to_vec(&events)?;
                let req = http_request(
                    "POST",
                    "/api/v1/events/batch",
                    &host,
                    Some(&user.token),
                    Some(&body),
                );
                let status = conn.send(&req).await?;
                if status != 202 {
                    bail!(
                        "a batch got {status}: {}",
                        String::from_utf8_lossy(conn.body())
                    );
                }
            }
        }));
    }
    let started = Instant::now();
    loop {
        let done = next.load(Ordering::SeqCst).min(requests);
        ctx.progress.update(&format!(
            "  {} of {} events sent · {:.0} s",
            thousands((done * BATCH) as f64),
            thousands((requests * BATCH) as f64),
            started.elapsed().as_secs_f64()
        ));
        if tasks.iter().all(|t| t.is_finished()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for t in tasks {
        t.await??;
    }
    Ok(requests * BATCH)
}

/// The most viewed film, for the per-film routes.
async fn top_film(
    addr: SocketAddr,
    host: &str,
    token: &str,
    period: &str,
) -> anyhow::Result<String> {
    let mut conn = Conn::new(addr);
    let req = http_request(
        "GET",
        &format!("/api/v1/analytics/films/top?by=views&limit=1&{period}"),
        host,
        Some(token),
        None,
    );
    let status = conn.send(&req).await?;
    let body: Value = serde_json::from_slice(conn.body())?;
    if status != 200 {
        bail!("films/top answered {status}: {body}");
    }
    body["films"][0]["film_id"]
        .as_str()
        .map(str::to_owned)
        .context("films/top listed no film")
}

/// `reps` answers of `path`, one at a time after one unmeasured, then as many of the
/// statement it said it ran, through the analysts' SQL route.
async fn measure_route(
    addr: SocketAddr,
    host: &str,
    token: &str,
    path: &str,
    reps: usize,
) -> anyhow::Result<(Percentiles, Percentiles)> {
    let mut conn = Conn::new(addr);
    let get = http_request("GET", path, host, Some(token), None);
    let (api, first) = timed(&mut conn, &get, reps, path).await?;
    let sql = serde_json::from_slice::<Value>(&first)?["sql"]
        .as_str()
        .with_context(|| format!("{path}: no sql in the answer"))?
        .to_owned();
    let body = serde_json::to_vec(&json!({ "sql": sql }))?;
    let post = http_request("POST", "/api/v1/query", host, Some(token), Some(&body));
    let what = format!("the sql of {path}, through /api/v1/query,");
    let (raw, _) = timed(&mut conn, &post, reps, &what).await?;
    Ok((Percentiles::of(&api), Percentiles::of(&raw)))
}

/// Sends `request` once unmeasured, then `reps` times measured, each expecting 200; the
/// latencies and the first answer's body.
async fn timed(
    conn: &mut Conn,
    request: &[u8],
    reps: usize,
    what: &str,
) -> anyhow::Result<(hdrhistogram::Histogram<u64>, Vec<u8>)> {
    let mut latencies = crate::load::histogram();
    let mut first = Vec::new();
    for i in 0..=reps {
        let t = Instant::now();
        let status = conn.send(request).await?;
        let took = t.elapsed();
        if status != 200 {
            bail!(
                "{what} answered {status}: {}",
                String::from_utf8_lossy(conn.body())
            );
        }
        if i == 0 {
            first = conn.body().to_vec();
        } else {
            latencies.record(took.as_micros().max(1) as u64)?;
        }
    }
    Ok((latencies, first))
}
