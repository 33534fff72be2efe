//! The analytics API, black-box: a known set of events goes in through ingest, and every
//! figure of every route is computed here, independently, from the events sent, then
//! compared with the answer. With `UGC_TEST_STORE=clickhouse` or `=cluster` (scripts/test
//! runs both) the same events and the same expectations run against a ClickHouse 18.16
//! server and a 2 shards × 2 replicas cluster, so the three engines answer alike.
//!
//! Each test's events sit in a period of their own (a random stretch of days in the
//! past), so tests sharing one server never see each other's figures.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use common::{SECRET, Server, new_user};
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};
use ugc_testkit::Rng;

const DAY_MS: i64 = 86_400_000;
const PLAYBACK: &[&str] = &[
    "view_progress",
    "pause",
    "full_view",
    "quality_change",
    "playback_start",
    "rebuffer",
    "playback_error",
];
const PAGES: &[&str] = &["film", "films_list", "genre", "person_search"];
const QUALITIES: &[&str] = &["360p", "720p", "1080p", "auto"];

fn token(user: &str, roles: &[&str]) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    encode(
        &Header::default(),
        &json!({"sub": user, "exp": exp, "roles": roles}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// One event as sent, and as this test reads it back into figures.
#[derive(Clone, Debug)]
struct Ev {
    user: String,
    film: String,
    kind: &'static str,
    t: i64,
    position: Option<u32>,
    from: String,
    to: String,
    startup_ms: u32,
    duration_ms: u32,
    fatal: bool,
    page: &'static str,
}

impl Ev {
    fn new(user: &str, film: &str, kind: &'static str, t: i64) -> Ev {
        Ev {
            user: user.to_owned(),
            film: film.to_owned(),
            kind,
            t,
            position: None,
            from: String::new(),
            to: String::new(),
            startup_ms: 0,
            duration_ms: 0,
            fatal: false,
            page: "",
        }
    }

    fn json(&self) -> Value {
        let mut v = json!({"type": self.kind, "occurred_at": self.t});
        let o = v.as_object_mut().unwrap();
        if self.kind != "page_view" {
            o.insert("film_id".into(), json!(self.film));
        }
        match self.kind {
            "view_progress" => {
                o.insert("film_timestamp".into(), json!(self.position));
            }
            "pause" => {
                o.insert("position".into(), json!(self.position));
            }
            "quality_change" => {
                o.insert("position".into(), json!(self.position));
                o.insert("from".into(), json!(self.from));
                o.insert("to".into(), json!(self.to));
            }
            "playback_start" => {
                o.insert("startup_ms".into(), json!(self.startup_ms));
            }
            "rebuffer" => {
                o.insert("position".into(), json!(self.position));
                o.insert("duration_ms".into(), json!(self.duration_ms));
            }
            "playback_error" => {
                o.insert("code".into(), json!(3));
                o.insert("message".into(), json!("decode \"fatal\":true"));
                o.insert("fatal".into(), json!(self.fatal));
            }
            "page_view" => {
                o.insert("page".into(), json!(self.page));
            }
            _ => {}
        }
        v
    }
}

/// A few days of viewing by a handful of viewers of three films, with every kind of
/// player event, page views, and a viewer who came back after a first visit long before.
struct Data {
    events: Vec<Ev>,
    films: Vec<String>,
    users: Vec<String>,
    /// The first day of the period (00:00 UTC) and its end (exclusive).
    from: i64,
    to: i64,
}

fn make_data(seed: u64) -> Data {
    let mut rng = Rng::new(seed);
    // A Monday between 2003 and 2023, so weeks and months are both crossed by 10 days.
    let monday0 = 4 * DAY_MS; // 1970-01-05
    let week = 7 * DAY_MS;
    let from = monday0 + (1700 + rng.below(1000) as i64) * week;
    let to = from + 10 * DAY_MS;
    let films: Vec<String> = (0..3).map(|_| rng.uuid().to_string()).collect();
    let users: Vec<String> = (0..8).map(|_| rng.uuid().to_string()).collect();
    let lengths = [600u32, 900, 1200];
    let mut events = Vec::new();
    for (ui, user) in users.iter().enumerate() {
        // The last viewer was first seen 40 days before the period: returning, not new.
        if ui == users.len() - 1 {
            let mut e = Ev::new(user, "", "page_view", from - 40 * DAY_MS);
            e.page = "genre";
            events.push(e);
        }
        for (fi, film) in films.iter().enumerate() {
            if rng.below(4) == 0 {
                continue;
            }
            let day = rng.below(10) as i64;
            let mut t = from + day * DAY_MS + rng.range(0, 20) as i64 * 3_600_000;
            let tick = |t: &mut i64| {
                *t += 1000 + rng_step(*t);
                *t
            };
            // Player health: a start (or an error before one), stalls.
            let failed_start = rng.below(6) == 0;
            if failed_start {
                let mut e = Ev::new(user, film, "playback_error", tick(&mut t));
                e.fatal = true;
                events.push(e);
                continue;
            }
            let mut e = Ev::new(user, film, "playback_start", tick(&mut t));
            e.startup_ms = rng.range(100, 5000) as u32;
            events.push(e);
            let len = lengths[fi];
            let stop = if rng.below(3) == 0 {
                len
            } else {
                rng.range(1, len as u64 / 60) as u32 * 60
            };
            let mut quality = QUALITIES[rng.below(3) as usize].to_owned();
            let mut pos = 0;
            while pos < stop {
                pos = (pos + 60).min(stop);
                let mut e = Ev::new(user, film, "view_progress", tick(&mut t));
                e.position = Some(pos);
                events.push(e);
                match rng.below(10) {
                    0 => {
                        let mut e = Ev::new(user, film, "pause", tick(&mut t));
                        e.position = Some(pos);
                        events.push(e);
                    }
                    1 | 2 => {
                        let to = QUALITIES[rng.below(4) as usize].to_owned();
                        let mut e = Ev::new(user, film, "quality_change", tick(&mut t));
                        e.position = Some(pos);
                        e.from = std::mem::replace(&mut quality, to.clone());
                        e.to = to;
                        events.push(e);
                    }
                    3 => {
                        let mut e = Ev::new(user, film, "rebuffer", tick(&mut t));
                        e.position = Some(pos);
                        e.duration_ms = rng.range(200, 9000) as u32;
                        events.push(e);
                    }
                    4 => {
                        let mut e = Ev::new(user, film, "playback_error", tick(&mut t));
                        e.fatal = rng.below(2) == 0;
                        events.push(e);
                    }
                    _ => {}
                }
            }
            if stop == len && rng.below(2) == 0 {
                events.push(Ev::new(user, film, "full_view", tick(&mut t)));
            }
        }
        for _ in 0..rng.range(1, 6) {
            let t = from + rng.below(10 * DAY_MS as u64) as i64;
            let mut e = Ev::new(user, "", "page_view", t);
            e.page = PAGES[rng.below(PAGES.len() as u64) as usize];
            events.push(e);
        }
    }
    Data {
        events,
        films,
        users,
        from,
        to,
    }
}

/// A pseudo-random pause between a viewing's events (0–59 s), from the time itself.
fn rng_step(t: i64) -> i64 {
    (t.wrapping_mul(2_654_435_761) >> 7).rem_euclid(60_000)
}

async fn send_all(s: &Server, data: &Data) {
    let mut by_user: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for e in &data.events {
        by_user.entry(&e.user).or_default().push(e.json());
    }
    for (user, events) in by_user {
        let tok = token(user, &[]);
        for chunk in events.chunks(500) {
            let (status, body) = s.post("/api/v1/events/batch", &tok, &json!(chunk)).await;
            assert_eq!(status, 202, "{body}");
            assert_eq!(body["rejected"], 0, "{body}");
        }
    }
    // Stored by the loader (views included), then visible as these users' events.
    s.wait_loaded(data.events.len() as u64, Duration::from_secs(60))
        .await;
    let users: Vec<String> = data.users.iter().map(|u| format!("'{u}'")).collect();
    s.wait_for(
        &format!(
            "SELECT count() AS n FROM ugc.events WHERE user_id IN ({})",
            users.join(", ")
        ),
        json!(data.events.len()),
        Duration::from_secs(60),
    )
    .await;
}

fn within(e: &Ev, from: i64, to: i64) -> bool {
    e.t >= from && e.t < to
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn opt_ratio(a: f64, b: f64) -> Value {
    if b > 0.0 { json!(a / b) } else { Value::Null }
}

fn day_start(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS) * DAY_MS
}

/// Per viewing (film, viewer): progressed, finished, furthest position, whether any
/// player event, pauses, switches.
#[derive(Default, Clone, Copy)]
struct Viewing {
    progressed: bool,
    finished: bool,
    pos: u64,
    viewer: bool,
    pauses: u64,
    switches: u64,
}

fn viewings<'a>(events: impl Iterator<Item = &'a Ev>) -> BTreeMap<(String, String), Viewing> {
    let mut out: BTreeMap<(String, String), Viewing> = BTreeMap::new();
    for e in events.filter(|e| PLAYBACK.contains(&e.kind) && !e.film.is_empty()) {
        let v = out.entry((e.film.clone(), e.user.clone())).or_default();
        v.viewer = true;
        match e.kind {
            "view_progress" => {
                v.progressed = true;
                v.pos = v.pos.max(e.position.unwrap() as u64);
            }
            "full_view" => {
                v.progressed = true;
                v.finished = true;
            }
            "pause" => v.pauses += 1,
            "quality_change" => v.switches += 1,
            _ => {}
        }
    }
    out
}

fn completed(vs: &[Viewing]) -> (u64, u64) {
    let len = vs.iter().map(|v| v.pos).max().unwrap_or(0);
    let done = vs
        .iter()
        .filter(|v| v.progressed && (v.finished || (len > 0 && v.pos * 100 >= len * 95)))
        .count() as u64;
    (done, len)
}

fn expected_top(data: &Data, from: i64, to: i64, by: &str, limit: usize) -> Value {
    let vs = viewings(data.events.iter().filter(|e| within(e, from, to)));
    let mut per_film: BTreeMap<String, Vec<Viewing>> = BTreeMap::new();
    for ((film, _), v) in vs {
        per_film.entry(film).or_default().push(v);
    }
    let mut rows: Vec<(String, u64, u64, u64, f64, u64, u64)> = per_film
        .into_iter()
        .map(|(film, vs)| {
            let views = vs.iter().filter(|v| v.progressed).count() as u64;
            let (done, len) = completed(&vs);
            let watch: u64 = vs.iter().map(|v| v.pos).sum();
            (
                film,
                views,
                vs.len() as u64,
                done,
                ratio(done, views),
                watch,
                len,
            )
        })
        .filter(|r| r.1 > 0)
        .collect();
    rows.sort_by(|a, b| {
        let key = match by {
            "views" => b.1.cmp(&a.1),
            "viewers" => b.2.cmp(&a.2),
            "completion" => b.4.partial_cmp(&a.4).unwrap().then(b.1.cmp(&a.1)),
            _ => b.5.cmp(&a.5),
        };
        key.then(a.0.cmp(&b.0))
    });
    rows.truncate(limit);
    json!(
        rows.into_iter()
            .map(
                |r| json!({"film_id": r.0, "views": r.1, "viewers": r.2, "completed": r.3,
                "completion_rate": r.4, "watch_time_s": r.5, "length_s": r.6})
            )
            .collect::<Vec<_>>()
    )
}

fn expected_dropoff(data: &Data, film: &str, buckets: u64, length: Option<u64>) -> Value {
    let mut furthest: BTreeMap<&str, u64> = BTreeMap::new();
    for e in data
        .events
        .iter()
        .filter(|e| e.kind == "view_progress" && e.film == film)
    {
        let p = furthest.entry(&e.user).or_default();
        *p = (*p).max(e.position.unwrap() as u64);
    }
    let viewers = furthest.len() as u64;
    let len = length.unwrap_or_else(|| furthest.values().copied().max().unwrap_or(0));
    let points: Vec<Value> = (0..=buckets)
        .map(|i| {
            let n = furthest
                .values()
                .filter(|&&p| p * buckets >= len * i)
                .count() as u64;
            json!({"percent": 100.0 * i as f64 / buckets as f64,
                   "position_s": len as f64 * i as f64 / buckets as f64,
                   "viewers": n, "share": ratio(n, viewers)})
        })
        .collect();
    json!({"viewers": viewers, "length_s": len, "points": points})
}

fn expected_summary(data: &Data, film: &str) -> Value {
    let vs: Vec<Viewing> = viewings(data.events.iter().filter(|e| e.film == film))
        .into_values()
        .collect();
    let views = vs.iter().filter(|v| v.progressed).count() as u64;
    let (done, len) = completed(&vs);
    let watch: u64 = vs.iter().map(|v| v.pos).sum();
    let pauses: u64 = vs.iter().map(|v| v.pauses).sum();
    let switches: u64 = vs.iter().map(|v| v.switches).sum();
    json!({"views": views, "viewers": vs.len(), "completed": done,
        "completion_rate": ratio(done, views), "average_watch_time_s": ratio(watch, views),
        "pauses": pauses, "pauses_per_view": ratio(pauses, views),
        "quality_switches": switches, "quality_switches_per_view": ratio(switches, views),
        "length_s": len, "rating": null})
}

fn height(q: &str) -> u32 {
    q.chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or(0)
}

fn expected_quality(data: &Data, bucket_ms: i64) -> Value {
    // Per (bucket, viewer, film): switches in time order and the furthest position.
    type Switch = (i64, u32, String, String);
    let mut groups: BTreeMap<(i64, &str, &str), (Vec<Switch>, u32)> = BTreeMap::new();
    for e in data
        .events
        .iter()
        .filter(|e| e.kind == "quality_change" || e.kind == "view_progress")
    {
        let g = groups
            .entry((e.t.div_euclid(bucket_ms) * bucket_ms, &e.user, &e.film))
            .or_default();
        g.1 = g.1.max(e.position.unwrap());
        if e.kind == "quality_change" {
            g.0.push((e.t, e.position.unwrap(), e.from.clone(), e.to.clone()));
        }
    }
    #[derive(Default)]
    struct P {
        up: u64,
        down: u64,
        other: u64,
        time: BTreeMap<String, u64>,
        trans: BTreeMap<(String, String), u64>,
    }
    let mut periods: BTreeMap<i64, P> = BTreeMap::new();
    for ((b, _, _), (mut sw, end)) in groups {
        if sw.is_empty() {
            continue;
        }
        sw.sort();
        let p = periods.entry(b).or_default();
        let mut names = vec![sw[0].2.clone()];
        let mut starts = vec![0i64];
        let mut ends = vec![];
        for s in &sw {
            names.push(s.3.clone());
            starts.push(s.1 as i64);
            ends.push(s.1 as i64);
            *p.trans.entry((s.2.clone(), s.3.clone())).or_default() += 1;
            let (hf, ht) = (height(&s.2), height(&s.3));
            if hf > 0 && ht > hf {
                p.up += 1;
            } else if ht > 0 && ht < hf {
                p.down += 1;
            } else {
                p.other += 1;
            }
        }
        ends.push(end as i64);
        for ((n, st), en) in names.into_iter().zip(starts).zip(ends) {
            *p.time.entry(n).or_default() += (en - st).max(0) as u64;
        }
    }
    let out: Vec<Value> = periods
        .into_iter()
        .map(|(b, p)| {
            let total: u64 = p.time.values().sum();
            let mut time: Vec<(String, u64)> = p.time.into_iter().collect();
            time.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let mut trans: Vec<((String, String), u64)> = p.trans.into_iter().collect();
            trans.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let trans: Vec<Value> = trans
                .into_iter()
                .map(|((f, t), n)| json!({"from": f, "to": t, "count": n}))
                .collect();
            json!({"period": rfc3339(b), "switches_up": p.up, "switches_down": p.down,
                "switches_other": p.other,
                "renditions": time.into_iter().map(|(q, s)| json!({"quality": q, "seconds": s,
                    "share": ratio(s, total)})).collect::<Vec<_>>(),
                "most_common": trans.first().cloned().unwrap_or(Value::Null),
                "transitions": trans})
        })
        .collect();
    json!(out)
}

fn expected_qoe(data: &Data, by_film: bool) -> Value {
    #[derive(Default)]
    struct V {
        watched: u64,
        startups: Vec<u64>,
        rebuffers: u64,
        rebuffer_ms: u64,
        errors: u64,
        failures: u64,
    }
    let mut vs: BTreeMap<(String, &str, &str), V> = BTreeMap::new();
    for e in data.events.iter().filter(|e| {
        matches!(
            e.kind,
            "view_progress" | "playback_start" | "rebuffer" | "playback_error"
        )
    }) {
        let key = if by_film {
            e.film.clone()
        } else {
            format!("{:020}", day_start(e.t))
        };
        let v = vs.entry((key, &e.user, &e.film)).or_default();
        match e.kind {
            "view_progress" => v.watched = v.watched.max(e.position.unwrap() as u64),
            "playback_start" => v.startups.push(e.startup_ms as u64),
            "rebuffer" => {
                v.rebuffers += 1;
                v.rebuffer_ms += e.duration_ms as u64;
            }
            _ => {
                v.errors += 1;
                v.failures += e.fatal as u64;
            }
        }
    }
    let mut groups: BTreeMap<String, Vec<V>> = BTreeMap::new();
    for ((k, _, _), v) in vs {
        groups.entry(k).or_default().push(v);
    }
    let quantile = |sorted: &[u64], q: f64| -> Value {
        if sorted.is_empty() {
            return Value::Null;
        }
        json!(sorted[((q * sorted.len() as f64) as usize).min(sorted.len() - 1)])
    };
    let out: Vec<Value> = groups
        .into_iter()
        .map(|(k, vs)| {
            let mut startups: Vec<u64> = vs.iter().flat_map(|v| v.startups.clone()).collect();
            startups.sort();
            let starts = startups.len() as u64;
            let watch: u64 = vs.iter().map(|v| v.watched).sum();
            let rebuffers: u64 = vs.iter().map(|v| v.rebuffers).sum();
            let rebuffer_ms: u64 = vs.iter().map(|v| v.rebuffer_ms).sum();
            let failures: u64 = vs.iter().map(|v| v.failures).sum();
            let exits = vs
                .iter()
                .filter(|v| v.errors > 0 && v.startups.is_empty())
                .count();
            let key = if by_film {
                k
            } else {
                rfc3339(k.parse().unwrap())
            };
            json!({"key": key, "starts": starts,
                "startup_ms_p50": quantile(&startups, 0.5), "startup_ms_p95": quantile(&startups, 0.95),
                "watch_time_s": watch, "rebuffers": rebuffers, "rebuffer_ms": rebuffer_ms,
                "rebuffer_ratio": opt_ratio(rebuffer_ms as f64 / 1000.0, watch as f64),
                "rebuffers_per_hour": opt_ratio(rebuffers as f64, watch as f64 / 3600.0),
                "failures": failures,
                "failures_per_100_starts": opt_ratio(100.0 * failures as f64, starts as f64),
                "exits_before_start": exits})
        })
        .collect();
    json!(out)
}

/// Start of the week (Monday) or month, or day, of `ms`, as Unix milliseconds.
fn grain_start(grain: &str, ms: i64) -> i64 {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).unwrap();
    let date = t.date();
    let start = match grain {
        "day" => date,
        "week" => date - time::Duration::days(date.weekday().number_days_from_monday() as i64),
        _ => date.replace_day(1).unwrap(),
    };
    start.midnight().assume_utc().unix_timestamp() * 1000
}

fn expected_audience(data: &Data, grain: &str) -> Value {
    let mut first: HashMap<&str, i64> = HashMap::new();
    let mut active: BTreeMap<i64, BTreeSet<&str>> = BTreeMap::new();
    for e in data.events.iter().filter(|e| e.t < data.to) {
        let f = first.entry(&e.user).or_insert(e.t);
        *f = (*f).min(e.t);
        if e.t >= data.from {
            active
                .entry(grain_start(grain, e.t))
                .or_default()
                .insert(&e.user);
        }
    }
    json!(
        active
            .into_iter()
            .map(|(b, users)| {
                let new = users
                    .iter()
                    .filter(|u| grain_start(grain, first[*u]) == b)
                    .count();
                json!({"period": rfc3339(b), "active_users": users.len(), "new_users": new,
                "returning_users": users.len() - new})
            })
            .collect::<Vec<_>>()
    )
}

fn expected_pages(data: &Data, by_day: bool) -> Value {
    let mut groups: BTreeMap<String, (u64, BTreeSet<&str>)> = BTreeMap::new();
    for e in data
        .events
        .iter()
        .filter(|e| e.kind == "page_view" && within(e, data.from, data.to))
    {
        let key = if by_day {
            rfc3339(day_start(e.t))
        } else {
            e.page.to_owned()
        };
        let g = groups.entry(key).or_default();
        g.0 += 1;
        g.1.insert(&e.user);
    }
    let mut rows: Vec<(String, u64, u64)> = groups
        .into_iter()
        .map(|(k, (n, u))| (k, n, u.len() as u64))
        .collect();
    if !by_day {
        rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    }
    json!(
        rows.into_iter()
            .map(|(k, n, u)| json!({"key": k, "views": n, "users": u}))
            .collect::<Vec<_>>()
    )
}

/// `v` with every fraction rounded to 9 decimals: serde_json's default float parsing may
/// land one unit in the last place away from the value the server printed.
fn norm(v: &Value) -> Value {
    match v {
        Value::Number(n) if !n.is_u64() && !n.is_i64() => {
            json!((n.as_f64().unwrap() * 1e9).round() / 1e9)
        }
        Value::Array(a) => Value::Array(a.iter().map(norm).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), norm(v))).collect()),
        other => other.clone(),
    }
}

/// The answer of `path`, checking the period, run time and statement every answer carries.
async fn answer(s: &Server, tok: &str, path: &str, from: i64, to: i64) -> Value {
    let sep = if path.contains('?') { '&' } else { '?' };
    let url = format!(
        "{path}{sep}from={}&to={}",
        rfc3339(from).replace('+', "%2B"),
        rfc3339(to).replace('+', "%2B")
    );
    let (status, body) = s.get(&url, tok).await;
    assert_eq!(status, 200, "{url}: {body}");
    assert_eq!(body["from"], rfc3339(from), "{url}");
    assert_eq!(body["to"], rfc3339(to), "{url}");
    assert!(
        body["elapsed_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
        "{body}"
    );
    // The statement behind the answer runs as the analyst's own SQL.
    let sql = body["sql"]
        .as_str()
        .unwrap_or_else(|| panic!("{url}: no sql in {body}"));
    let (status, ran) = s
        .post("/api/v1/query", tok, &serde_json::json!({ "sql": sql }))
        .await;
    assert_eq!(
        status, 200,
        "{url}: its sql did not run through /api/v1/query: {ran}"
    );
    norm(&body)
}

fn seed() -> u64 {
    let seed = std::env::var("UGC_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("analytics test data seed: {seed} (UGC_TEST_SEED replays it)");
    seed
}

#[tokio::test]
async fn every_figure_matches_one_computed_from_the_events_sent() {
    let s = Server::start(&[]).await;
    let data = make_data(seed());
    send_all(&s, &data).await;
    let tok = token(&new_user(), &["analyst"]);
    let (from, to) = (data.from, data.to);

    for by in ["views", "viewers", "completion", "watch_time"] {
        let body = answer(
            &s,
            &tok,
            &format!("/api/v1/analytics/films/top?by={by}"),
            from,
            to,
        )
        .await;
        assert_eq!(body["by"], by);
        assert_eq!(
            body["films"],
            norm(&expected_top(&data, from, to, by, 10)),
            "by={by}"
        );
    }
    // A narrower period and a limit: only what happened in about the first three days,
    // from and to within an hour (the answer reads those hours' events one by one).
    let (f3, t3) = (from + 5_400_123, from + 3 * DAY_MS + 2_700_000);
    let body = answer(
        &s,
        &tok,
        "/api/v1/analytics/films/top?by=viewers&limit=2",
        f3,
        t3,
    )
    .await;
    assert_eq!(
        body["films"],
        norm(&expected_top(&data, f3, t3, "viewers", 2))
    );

    for film in &data.films {
        let body = answer(
            &s,
            &tok,
            &format!("/api/v1/analytics/films/{film}/dropoff"),
            from,
            to,
        )
        .await;
        assert_eq!(body["buckets"], 20);
        let want = norm(&expected_dropoff(&data, film, 20, None));
        for k in ["viewers", "length_s", "points"] {
            assert_eq!(body[k], want[k], "dropoff {k} of {film}");
        }
        let path = format!("/api/v1/analytics/films/{film}/dropoff?buckets=4&length=1000");
        let body = answer(&s, &tok, &path, from, to).await;
        assert_eq!(
            body["points"],
            norm(&expected_dropoff(&data, film, 4, Some(1000)))["points"]
        );

        let body = answer(
            &s,
            &tok,
            &format!("/api/v1/analytics/films/{film}/summary"),
            from,
            to,
        )
        .await;
        let want = norm(&expected_summary(&data, film));
        for (k, v) in want.as_object().unwrap() {
            assert_eq!(&body[k], v, "summary {k} of {film}");
        }
    }

    for (group, ms) in [("hour", 3_600_000), ("day", DAY_MS)] {
        let path = format!("/api/v1/analytics/quality?group_by={group}");
        let body = answer(&s, &tok, &path, from, to).await;
        assert_eq!(
            body["periods"],
            norm(&expected_quality(&data, ms)),
            "quality by {group}"
        );
    }
    for (group, by_film) in [("day", false), ("film", true)] {
        let path = format!("/api/v1/analytics/qoe?group_by={group}");
        let body = answer(&s, &tok, &path, from, to).await;
        assert_eq!(
            body["groups"],
            norm(&expected_qoe(&data, by_film)),
            "qoe by {group}"
        );
    }
    for grain in ["day", "week", "month"] {
        let path = format!("/api/v1/analytics/audience?group_by={grain}");
        let body = answer(&s, &tok, &path, from, to).await;
        assert_eq!(
            body["periods"],
            norm(&expected_audience(&data, grain)),
            "audience by {grain}"
        );
    }
    for (group, by_day) in [("page", false), ("day", true)] {
        let path = format!("/api/v1/analytics/pages?group_by={group}");
        let body = answer(&s, &tok, &path, from, to).await;
        assert_eq!(
            body["pages"],
            norm(&expected_pages(&data, by_day)),
            "pages by {group}"
        );
    }
}

#[tokio::test]
async fn content_rankings_follow_ratings_reviews_and_bookmarks() {
    let s = Server::start(&[]).await;
    let films: Vec<String> = (0..3).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let users: Vec<String> = (0..4).map(|_| new_user()).collect();
    let put = |user: &str, path: String, body: Value| {
        let (s, tok) = (&s, token(user, &[]));
        async move {
            let (status, out) = s.send("PUT", &path, &tok, Some(&body)).await;
            assert!(status < 300, "{path}: {out}");
        }
    };
    // Film 0: scores 9 and 7 (one replaced 4 → 7); film 1: 10, then removed; film 2: 5.
    let rating = |f: &str| format!("/api/v1/films/{f}/rating");
    put(&users[0], rating(&films[0]), json!({"score": 9})).await;
    put(&users[1], rating(&films[0]), json!({"score": 4})).await;
    put(&users[1], rating(&films[0]), json!({"score": 7})).await;
    put(&users[2], rating(&films[1]), json!({"score": 10})).await;
    let (status, _) = s
        .send("DELETE", &rating(&films[1]), &token(&users[2], &[]), None)
        .await;
    assert_eq!(status, 204);
    put(&users[3], rating(&films[2]), json!({"score": 5})).await;
    for (u, f) in [(0, 1), (1, 1), (2, 2)] {
        let (status, body) = s
            .post(
                &format!("/api/v1/films/{}/reviews", films[f]),
                &token(&users[u], &[]),
                &json!({"text": "worth it"}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    for (u, f) in [(0, 2), (1, 2), (2, 2), (3, 0)] {
        put(
            &users[u],
            format!("/api/v1/me/bookmarks/{}", films[f]),
            json!({}),
        )
        .await;
    }

    let tok = token(&new_user(), &["admin"]);
    let want_rating = json!([
        {"film_id": films[0], "ratings": 2, "average_rating": 8.0, "reviews": 0, "bookmarks": 1},
        {"film_id": films[2], "ratings": 1, "average_rating": 5.0, "reviews": 1, "bookmarks": 3},
        {"film_id": films[1], "ratings": 0, "average_rating": null, "reviews": 2, "bookmarks": 0},
    ]);
    // The content events reach the store through the outbox and the log: poll.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = s.get("/api/v1/analytics/content/top", &tok).await;
        assert_eq!(status, 200, "{body}");
        if body["films"] == want_rating {
            assert_eq!(body["by"], "rating");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "content/top gave {body}, wanted {want_rating}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rows = want_rating.as_array().unwrap();
    let (_, body) = s
        .get("/api/v1/analytics/content/top?by=reviews&limit=2", &tok)
        .await;
    assert_eq!(body["films"], json!([rows[2], rows[1]]));
    let (_, body) = s
        .get("/api/v1/analytics/content/top?by=bookmarks", &tok)
        .await;
    assert_eq!(body["films"], json!([rows[1], rows[0], rows[2]]));
    // The film's own summary carries its ratings.
    let (_, body) = s
        .get(
            &format!("/api/v1/analytics/films/{}/summary", films[0]),
            &tok,
        )
        .await;
    assert_eq!(body["rating"], json!({"ratings": 2, "average": 8.0}));
}

#[tokio::test]
async fn who_may_ask_and_what_is_refused() {
    let s = Server::start(&[]).await;
    let film = uuid::Uuid::new_v4();
    let routes = [
        "/api/v1/analytics/films/top".to_owned(),
        format!("/api/v1/analytics/films/{film}/dropoff"),
        format!("/api/v1/analytics/films/{film}/summary"),
        "/api/v1/analytics/quality".to_owned(),
        "/api/v1/analytics/qoe".to_owned(),
        "/api/v1/analytics/audience".to_owned(),
        "/api/v1/analytics/pages".to_owned(),
        "/api/v1/analytics/content/top".to_owned(),
    ];
    let viewer = token(&new_user(), &[]);
    let analyst = token(&new_user(), &["analyst"]);
    for r in &routes {
        let status = s
            .http
            .get(format!("{}{r}", s.base))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 401, "{r} without a token");
        assert_eq!(s.get(r, &viewer).await.0, 403, "{r} as a viewer");
        let (status, body) = s.get(r, &analyst).await;
        assert_eq!(status, 200, "{r}: {body}");
        // The default period: the last seven days, up to now.
        let from = time::OffsetDateTime::parse(
            body["from"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let to = time::OffsetDateTime::parse(
            body["to"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert_eq!(to - from, time::Duration::days(7), "{r}: {body}");
        assert!((time::OffsetDateTime::now_utc() - to).abs() < time::Duration::minutes(1));

        for (query, field) in [
            ("from=yesterday", "from"),
            ("to=2026-13-01T00:00:00Z", "to"),
            ("from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z", "from"),
        ] {
            let (status, body) = s.get(&format!("{r}?{query}"), &analyst).await;
            assert_eq!(status, 422, "{r}?{query}: {body}");
            assert_eq!(body["errors"][0]["field"], field, "{r}?{query}: {body}");
        }
    }
    for (path, field) in [
        ("films/top?by=likes", "by"),
        ("films/top?limit=0", "limit"),
        ("films/top?limit=many", "limit"),
        ("films/not-a-film/dropoff", "film_id"),
        ("films/not-a-film/summary", "film_id"),
        ("quality?group_by=week", "group_by"),
        ("qoe?group_by=hour", "group_by"),
        ("audience?group_by=year", "group_by"),
        ("pages?group_by=user", "group_by"),
        ("content/top?by=stars", "by"),
    ] {
        let (status, body) = s.get(&format!("/api/v1/analytics/{path}"), &analyst).await;
        assert_eq!(status, 422, "{path}: {body}");
        assert_eq!(body["errors"][0]["field"], field, "{path}: {body}");
    }
    let (status, body) = s
        .get(
            &format!("/api/v1/analytics/films/{film}/dropoff?buckets=1000"),
            &analyst,
        )
        .await;
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (422, Some("buckets"))
    );

    // Each route is in the OpenAPI document, tagged `analytics`, with an example answer.
    let doc: Value = s
        .http
        .get(format!("{}/openapi.json", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "films/top",
        "films/{film_id}/dropoff",
        "films/{film_id}/summary",
        "quality",
        "qoe",
        "audience",
        "pages",
        "content/top",
    ] {
        let op = &doc["paths"][format!("/api/v1/analytics/{path}")]["get"];
        assert_eq!(op["tags"], json!(["analytics"]), "{path}: {op}");
        let ok = &op["responses"]["200"]["content"]["application/json"];
        assert!(ok["example"].is_object(), "{path}: no example in {ok}");
        for name in ["from", "to"] {
            assert!(
                op["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == name)),
                "{path}: no `{name}` parameter"
            );
        }
    }
}

#[tokio::test]
async fn the_dashboard_draws_every_chart_from_the_answers() {
    let s = Server::start(&[]).await;
    let data = make_data(seed());
    send_all(&s, &data).await;
    let tok = token(&new_user(), &["analyst"]);
    let browser = common::browser::Browser::start().await;
    browser
        .goto(&format!(
            "{}/dashboard?from={}&to={}#token={tok}",
            s.base,
            rfc3339(data.from),
            rfc3339(data.to)
        ))
        .await;
    browser
        .wait_until(
            "window.dashboard && (window.dashboard.ready || window.dashboard.error)",
            Duration::from_secs(30),
            "the dashboard loads",
        )
        .await;
    assert_eq!(
        browser.js("return window.dashboard.error;").await,
        Value::Null
    );
    // Every chart drew a point (bar, or line vertex) for every value of its first series
    // (a day without starts has no startup time: no point).
    let drawn = browser
        .js("return Object.fromEntries(Object.entries(window.dashboard.charts).map(([k, c]) => \
             [k, [c.data.datasets[0].data.filter((v) => v !== null).length, c.getDatasetMeta(0).data.filter((e) => !e.skip && Number.isFinite(e.x) && Number.isFinite(e.y)).length]]));")
        .await;
    for chart in ["top", "dropoff", "quality", "qoe", "audience", "pages"] {
        let [n, points] = [drawn[chart][0].as_u64(), drawn[chart][1].as_u64()];
        assert!(n.is_some_and(|n| n > 0) && n == points, "{chart}: {drawn}");
    }
    // And they show the answers' figures: the top films' views, the days with viewers.
    let views: Vec<Value> = expected_top(&data, data.from, data.to, "views", 10)
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["views"].clone())
        .collect();
    assert_eq!(
        browser
            .js("return window.dashboard.charts.top.data.datasets[0].data;")
            .await,
        json!(views)
    );
    // Counts on the left axis, sized to them; the completion share on its own axis.
    let most = views.iter().filter_map(Value::as_u64).max().unwrap_or(0);
    assert_eq!(
        browser
            .js("const c = window.dashboard.charts.top; \
                 return [0, 1, 2].map((i) => c.getDatasetMeta(i).yScale.id);")
            .await,
        json!(["y", "y", "pct"]),
    );
    let y_max = browser
        .js("return window.dashboard.charts.top.scales.y.max;")
        .await;
    assert!(
        y_max.as_f64().unwrap() >= most as f64,
        "left axis to {y_max}, views up to {most}"
    );
    let days = expected_audience(&data, "day").as_array().unwrap().len();
    assert_eq!(
        browser
            .js("return window.dashboard.charts.audience.data.labels.length;")
            .await,
        json!(days)
    );
    // The page works with the `access_token` cookie instead of the fragment too.
    browser
        .js(&format!(
            "document.cookie = 'access_token={tok}; path=/'; return true;"
        ))
        .await;
    browser
        .goto(&format!(
            "{}/dashboard?from={}&to={}",
            s.base,
            rfc3339(data.from),
            rfc3339(data.to)
        ))
        .await;
    browser
        .wait_until(
            "window.dashboard && (window.dashboard.ready || window.dashboard.error)",
            Duration::from_secs(30),
            "the dashboard loads with the cookie",
        )
        .await;
    assert_eq!(
        browser.js("return window.dashboard.error;").await,
        Value::Null
    );

    let png = browser.screenshot_png().await;
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    if std::env::var_os("UGC_UPDATE_SCREENSHOT").is_some_and(|v| v == "1") {
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
        std::fs::write(docs.join("dashboard.png"), png).unwrap();
    }
}
