//! Scenario 7: content (ratings, reviews, bookmarks) on each database. A fresh database
//! is seeded straight through the database (10M ratings at full scale), then `ugc serve`
//! takes a mixed load over HTTP with real tokens, as fast as it answers and then at half
//! that rate; the baseline is the very same operations on the same data through the
//! content store's sqlx statements, in this process, with no HTTP.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use ugc_content::seed::{self, Scale};
use ugc_content::{ContentStore, ContentUrl, Limit, ReviewSort};
use ugc_model::{FilmId, Score, Timestamp, UserId};

use super::{Ctx, measure};
use crate::client::Conn;
use crate::load::{self, Percentiles, PhaseResult, Worker};
use crate::procs::Server;
use crate::progress::thousands;
use crate::report::{Measure, Outcome, Target};
use crate::workload::{self, Rng, http_request};

/// The content databases the scenario runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ContentDb {
    /// `UGC_CONTENT_URL` unset: a file under the data directory.
    Sqlite,
    /// A PostgreSQL 15 server the suite starts (the Debian package, as in the tests).
    Postgres,
}

impl ContentDb {
    pub const ALL: [ContentDb; 2] = [ContentDb::Sqlite, ContentDb::Postgres];

    pub fn label(self) -> &'static str {
        match self {
            ContentDb::Sqlite => "content on SQLite",
            ContentDb::Postgres => "content on PostgreSQL",
        }
    }

    /// As `--backends` names it.
    pub fn slug(self) -> &'static str {
        match self {
            ContentDb::Sqlite => "sqlite",
            ContentDb::Postgres => "postgres",
        }
    }
}

/// The scenario's outcomes.
pub(super) const IDS: [&str; 7] = ["7s", "7", "7a", "7b", "7c", "7d", "7e"];

/// The anchor the figures are read against.
pub(super) const ANCHOR: &str = "Content anchor: seed 004's own study of MongoDB for the same data \
    (1,000,000 likes) measured 104.9 ms on average to read one like and 186.1 ms for one user's \
    likes, against their requirement of 200 ms.";

pub(super) fn title(id: &str) -> Option<&'static str> {
    Some(match id {
        "7" => "content: mixed load, 64 connections",
        "7a" => "content: rating summary p99 at half load",
        "7b" => "content: review page p99 at half load",
        "7c" => "content: rating set p99 at half load",
        "7d" => "content: bookmark add p99 at half load",
        "7e" => "content: bookmark remove p99 at half load",
        "7s" => "content: seeding the database",
        _ => return None,
    })
}

/// The routes of the mix, in the order of their figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Summary,
    Reviews,
    Rate,
    BookmarkAdd,
    BookmarkRemove,
}

impl Route {
    const ALL: [Route; 5] = [
        Route::Summary,
        Route::Reviews,
        Route::Rate,
        Route::BookmarkAdd,
        Route::BookmarkRemove,
    ];

    fn id(self) -> &'static str {
        match self {
            Route::Summary => "7a",
            Route::Reviews => "7b",
            Route::Rate => "7c",
            Route::BookmarkAdd => "7d",
            Route::BookmarkRemove => "7e",
        }
    }

    fn http(self) -> &'static str {
        match self {
            Route::Summary => "GET /api/v1/films/{id}/rating",
            Route::Reviews => "GET /api/v1/films/{id}/reviews",
            Route::Rate => "PUT /api/v1/films/{id}/rating",
            Route::BookmarkAdd => "PUT /api/v1/me/bookmarks/{id}",
            Route::BookmarkRemove => "DELETE /api/v1/me/bookmarks/{id}",
        }
    }

    /// Reads: p99 < 5 ms; writes: p99 < 10 ms.
    fn target_ms(self) -> f64 {
        match self {
            Route::Summary | Route::Reviews => 5.0,
            _ => 10.0,
        }
    }

    /// Statuses that are success: a bookmark added twice is 200, removed twice 404 (a
    /// pool the load cycles through twice meets its own earlier changes).
    fn ok(self, status: u16) -> bool {
        match self {
            Route::BookmarkAdd => status == 201 || status == 200,
            Route::BookmarkRemove => status == 204 || status == 404,
            _ => status == 200,
        }
    }
}

/// One operation of the mix: who does what to which film, and its HTTP request.
struct Op {
    route: Route,
    user: UserId,
    film: FilmId,
    score: Score,
    request: Vec<u8>,
}

/// `n` operations of the mix: 35% rating summaries and 35% review pages (70% reads),
/// 20% rating sets, 5% bookmarks added and 5% removed (10% bookmark changes), by users
/// and films drawn uniformly from the seeded ones. A removal names a seeded bookmark.
fn ops(scale: &Scale, n: usize, seed: u64, host: Option<&str>) -> anyhow::Result<Vec<Op>> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let pick = rng.below(100);
            let route = match pick {
                0..35 => Route::Summary,
                35..70 => Route::Reviews,
                70..90 => Route::Rate,
                90..95 => Route::BookmarkAdd,
                _ => Route::BookmarkRemove,
            };
            let (u, f) = if route == Route::BookmarkRemove && scale.bookmarks > 0 {
                scale.bookmark(rng.below(scale.bookmarks))
            } else {
                (rng.below(scale.users), rng.below(scale.films))
            };
            let user = scale.user(u);
            let film = scale.film(f);
            let score = Score::try_from(rng.below(11) as i64).map_err(anyhow::Error::msg)?;
            let request = match host {
                None => vec![],
                Some(host) => {
                    let token = workload::token(&user, &[])?;
                    let film = film.as_uuid();
                    let (method, path, body) = match route {
                        Route::Summary => ("GET", format!("/api/v1/films/{film}/rating"), None),
                        Route::Reviews => ("GET", format!("/api/v1/films/{film}/reviews"), None),
                        Route::Rate => (
                            "PUT",
                            format!("/api/v1/films/{film}/rating"),
                            Some(format!("{{\"score\":{}}}", score.value())),
                        ),
                        Route::BookmarkAdd => ("PUT", format!("/api/v1/me/bookmarks/{film}"), None),
                        Route::BookmarkRemove => {
                            ("DELETE", format!("/api/v1/me/bookmarks/{film}"), None)
                        }
                    };
                    http_request(
                        method,
                        &path,
                        host,
                        Some(&token),
                        body.as_deref().map(str::as_bytes),
                    )
                }
            };
            Ok(Op {
                route,
                user,
                film,
                score,
                request,
            })
        })
        .collect()
}

struct HttpMix {
    conn: Conn,
    ops: Arc<Vec<Op>>,
}

impl Worker for HttpMix {
    fn call(&mut self, i: u64) -> impl Future<Output = Result<u64, String>> + Send {
        let HttpMix { conn, ops } = self;
        async move {
            let op = &ops[(i % ops.len() as u64) as usize];
            match conn.send(&op.request).await {
                Ok(s) if op.route.ok(s) => Ok(1),
                Ok(s) => Err(format!(
                    "{}: HTTP {s}: {}",
                    op.route.http(),
                    String::from_utf8_lossy(&conn.body()[..conn.body().len().min(300)])
                )),
                Err(e) => Err(e.to_string()),
            }
        }
    }

    fn route(&self, i: u64) -> usize {
        self.ops[(i % self.ops.len() as u64) as usize].route as usize
    }
}

/// The same operations through the content store: its sqlx statements, no HTTP, no
/// JSON, no token.
struct StoreMix {
    store: Arc<dyn ContentStore>,
    ops: Arc<Vec<Op>>,
}

impl Worker for StoreMix {
    fn call(&mut self, i: u64) -> impl Future<Output = Result<u64, String>> + Send {
        let store = self.store.clone();
        let ops = self.ops.clone();
        async move {
            let op = &ops[(i % ops.len() as u64) as usize];
            let now = Timestamp::now();
            let r = match op.route {
                Route::Summary => store.rating_summary(&op.user, op.film).await.map(|_| ()),
                Route::Reviews => store
                    .reviews_of_film(op.film, ReviewSort::Newest, Limit::DEFAULT, None)
                    .await
                    .map(|_| ()),
                Route::Rate => store
                    .set_rating(&op.user, op.film, op.score, now)
                    .await
                    .map(|_| ()),
                Route::BookmarkAdd => store.add_bookmark(&op.user, op.film, now).await.map(|_| ()),
                Route::BookmarkRemove => store
                    .remove_bookmark(&op.user, op.film, now)
                    .await
                    .map(|_| ()),
            };
            r.map(|()| 1).map_err(|e| format!("{:?}: {e}", op.route))
        }
    }

    fn route(&self, i: u64) -> usize {
        self.ops[(i % self.ops.len() as u64) as usize].route as usize
    }
}

/// What seed 004's own study measured on MongoDB for the same data: the anchor.
const MONGO_ONE_LIKE_MS: f64 = 104.9;
const MONGO_USER_LIKES_MS: f64 = 186.1;

/// Runs scenario 7 on `db`: seed, HTTP at full and half load, the same without HTTP.
pub(super) fn run(ctx: &mut Ctx, db: ContentDb) -> anyhow::Result<()> {
    let plan = ctx.plan;
    let label = db.label();
    let scale = Scale::FULL.divided(plan.content_scale);
    let dir = ctx.work.join(format!("content-{}", db.slug()));
    std::fs::create_dir_all(dir.join("data"))?;

    // PostgreSQL with its default durability (fsync on), like an operator's server: the
    // test kit's default (fsync off) would flatter it next to SQLite's synchronous=FULL.
    let pg = match db {
        ContentDb::Sqlite => None,
        ContentDb::Postgres => {
            ctx.progress
                .done("scenario 7: starting PostgreSQL 15 (fsync on)");
            Some(ugc_testkit::postgres::Postgres::start_durable().map_err(anyhow::Error::msg)?)
        }
    };
    let (url, env): (ContentUrl, Vec<(&str, String)>) = match &pg {
        None => (
            ContentUrl::Sqlite(dir.join("data").join("content.db")),
            vec![],
        ),
        Some(pg) => {
            let url = pg
                .create_database("bench_content")
                .map_err(anyhow::Error::msg)?;
            (
                ContentUrl::Postgres(url.clone()),
                vec![("UGC_CONTENT_URL", url)],
            )
        }
    };

    ctx.progress.done(&format!(
        "scenario 7 ({label}): seeding {} ratings over {} films and {} users, {} reviews, {} bookmarks",
        thousands(scale.ratings as f64),
        thousands(scale.films as f64),
        thousands(scale.users as f64),
        thousands(scale.reviews as f64),
        thousands(scale.bookmarks as f64),
    ));
    let seed_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let t0 = Instant::now();
    let progress = &ctx.progress;
    let seeded = seed_rt
        .block_on(seed::seed(&url, &scale, &|table: &str, n: u64| {
            progress.update(&format!(
                "  seeding {table}: {} rows · {:.0} s",
                thousands(n as f64),
                t0.elapsed().as_secs_f64()
            ))
        }))
        .context("seeding the content database")?;
    let rows: u64 = seeded.tables.iter().map(|t| t.1).sum();
    ctx.progress.done(&format!(
        "  seeded {} rows in {:.1} s ({})",
        thousands(rows as f64),
        seeded.secs,
        seeded
            .tables
            .iter()
            .map(|(t, n, s)| format!("{t} {} in {s:.1} s", thousands(*n as f64)))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let mut o = Outcome::new("7s", "content: seeding the database", label);
    o.figure = Some(Measure::new(
        format!(
            "{} ratings, {} reviews, {} bookmarks (+ aggregates)",
            thousands(scale.ratings as f64),
            thousands(scale.reviews as f64),
            thousands(scale.bookmarks as f64)
        ),
        seeded.secs,
        "s",
    ));
    for (table, n, secs) in &seeded.tables {
        o.more.push(if *n > 0 {
            Measure::new(
                format!("{table}: {} rows", thousands(*n as f64)),
                *n as f64 / secs.max(1e-6),
                "rows/s",
            )
        } else {
            Measure::new(*table, *secs, "s")
        });
    }
    ctx.put(o);

    let pool = plan.pool.max(1024) * 8;
    ctx.progress.done(&format!("starting ugc serve ({label})"));
    let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Server::start(plan, &dir.join("serve"), &[], &envs)?;
    let host = server.addr.to_string();
    let pid = Some(server.proc.pid());

    ctx.progress
        .done("scenario 7: mixed load over HTTP, as fast as it answers");
    let full_ops = Arc::new(ops(&scale, pool, 0xc0_01, Some(&host))?);
    let spec = ctx.phase("content mix over HTTP", None, pid);
    let http_full = ctx.client.block_on(load::run(
        &spec,
        http_workers(server.addr, plan.connections, &full_ops),
        &ctx.progress,
    ));
    drop(full_ops);
    ctx.record(
        &format!("content mix over HTTP, {} (ops/s)", db.slug()),
        &http_full,
    );
    ctx.check("content mix over HTTP", &http_full)?;
    let half = http_full.units_per_sec() / 2.0;

    ctx.progress.done(&format!(
        "scenario 7: mixed load over HTTP at half that rate ({} ops/s)",
        thousands(half)
    ));
    let half_ops = Arc::new(ops(&scale, pool, 0xc0_02, Some(&host))?);
    let spec = ctx.phase("content mix over HTTP, half load", Some(half), pid);
    let http_half = ctx.client.block_on(load::run(
        &spec,
        http_workers(server.addr, plan.connections, &half_ops),
        &ctx.progress,
    ));
    drop(half_ops);
    ctx.record(
        &format!("content mix over HTTP at half load, {} (ops/s)", db.slug()),
        &http_half,
    );
    ctx.check("content mix over HTTP, half load", &http_half)?;
    let server_rss = server.proc.peak_rss().unwrap_or(0) as f64 / (1024.0 * 1024.0);
    server.proc.stop();

    ctx.progress
        .done("scenario 7: baseline, the same operations through the content store, no HTTP");
    let base_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let store: Arc<dyn ContentStore> = base_rt.block_on(async {
        anyhow::Ok(match &url {
            ContentUrl::Sqlite(path) => {
                Arc::new(ugc_content::sqlite::Store::open(path).await?) as Arc<dyn ContentStore>
            }
            ContentUrl::Postgres(u) => Arc::new(ugc_content::postgres::Store::connect(u).await?),
        })
    })?;
    let (base_full, base_half) = base_rt.block_on(async {
        let full = Arc::new(ops(&scale, pool, 0xc0_03, None)?);
        let spec = ctx.phase("content mix, no HTTP", None, None);
        let a = load::run(
            &spec,
            store_workers(&store, plan.connections, &full),
            &ctx.progress,
        )
        .await;
        let halfway = Arc::new(ops(&scale, pool, 0xc0_04, None)?);
        let spec = ctx.phase("content mix, no HTTP, same rate", Some(half), None);
        let b = load::run(
            &spec,
            store_workers(&store, plan.connections, &halfway),
            &ctx.progress,
        )
        .await;
        anyhow::Ok((a, b))
    })?;
    drop(store);
    drop(base_rt);
    ctx.record(
        &format!("content mix, no HTTP, {} (ops/s)", db.slug()),
        &base_full,
    );
    ctx.check("content mix, no HTTP", &base_full)?;
    ctx.record(
        &format!(
            "content mix, no HTTP, at the same half rate, {} (ops/s)",
            db.slug()
        ),
        &base_half,
    );
    ctx.check("content mix, no HTTP, half rate", &base_half)?;
    drop(pg);
    std::fs::remove_dir_all(&dir)?;

    let mut o = Outcome::new("7", "content: mixed load, 64 connections", label).measured(
        measure(
            "70% reads, 20% rating sets, 10% bookmark changes over HTTP",
            http_full.units_per_sec(),
            "ops/s",
            Some(&http_full),
        ),
        measure(
            "the same operations through the content store, no HTTP",
            base_full.units_per_sec(),
            "ops/s",
            Some(&base_full),
        ),
    );
    o.more
        .extend(routes_of(&http_full, "over HTTP, as fast as it answers"));
    o.more
        .extend(routes_of(&base_full, "no HTTP, as fast as it answers"));
    o.more
        .push(Measure::new("ugc serve peak RSS", server_rss, "MB"));
    ctx.put(o);

    for route in Route::ALL {
        let (Some(h), Some(b)) = (
            http_half
                .routes
                .get(route as usize)
                .filter(|h| !h.is_empty()),
            base_half
                .routes
                .get(route as usize)
                .filter(|h| !h.is_empty()),
        ) else {
            continue;
        };
        let (hp, bp) = (Percentiles::of(h), Percentiles::of(b));
        let mut figure = Measure::new(format!("{} p99, HTTP", route.http()), hp.p99, "ms");
        figure.latency_ms = Some(hp.clone());
        let mut baseline = Measure::new("the same statements, no HTTP, p99", bp.p99, "ms");
        baseline.latency_ms = Some(bp);
        let mut o = Outcome::new(route.id(), title(route.id()).unwrap_or("?"), label)
            .measured(figure, baseline);
        o.more.push(Measure::new(
            format!("{} p50, HTTP", route.http()),
            hp.p50,
            "ms",
        ));
        if matches!(route, Route::Summary | Route::Reviews) {
            o.more.push(Measure::new(
                "anchor: seed 004's MongoDB study, one like (average)",
                MONGO_ONE_LIKE_MS,
                "ms",
            ));
            o.more.push(Measure::new(
                "anchor: seed 004's MongoDB study, one user's likes (average)",
                MONGO_USER_LIKES_MS,
                "ms",
            ));
        }
        o.target = Some(Target {
            text: format!("< {:.0} ms", route.target_ms()),
            met: hp.p99 < route.target_ms(),
        });
        ctx.put(o);
    }
    Ok(())
}

fn http_workers(addr: SocketAddr, n: usize, ops: &Arc<Vec<Op>>) -> Vec<HttpMix> {
    (0..n)
        .map(|_| HttpMix {
            conn: Conn::new(addr),
            ops: ops.clone(),
        })
        .collect()
}

fn store_workers(store: &Arc<dyn ContentStore>, n: usize, ops: &Arc<Vec<Op>>) -> Vec<StoreMix> {
    (0..n)
        .map(|_| StoreMix {
            store: store.clone(),
            ops: ops.clone(),
        })
        .collect()
}

/// Each route's rate and latency in a phase.
fn routes_of(r: &PhaseResult, how: &str) -> Vec<Measure> {
    Route::ALL
        .iter()
        .filter_map(|route| {
            let h = r.routes.get(*route as usize).filter(|h| !h.is_empty())?;
            let mut m = Measure::new(
                format!("{} {how}", route.http()),
                h.len() as f64 / r.secs,
                "ops/s",
            );
            m.latency_ms = Some(Percentiles::of(h));
            Some(m)
        })
        .collect()
}
