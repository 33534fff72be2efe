//! Analysts' SQL, from outside: hostile statements are refused (403 or 422) and never
//! answer with anything outside the `ugc` database — above all not the server's own
//! JWT secret — while ordinary analytics SQL keeps working. Runs on chDB by default and
//! on a ClickHouse server or cluster with `UGC_TEST_STORE` (see scripts/test).

mod common;

use std::time::Duration;

use common::{Server, new_user};
use serde_json::{Value, json};

/// Hostile statements. `{SECRET}` stands for the absolute path of the data dir's
/// `jwt-secret`, `{OUT}` for a file the statement must not create.
const HOSTILE: &[&str] = &[
    // The two reported attacks, verbatim.
    "SELECT * FROM file('{SECRET}', 'LineAsString') LIMIT 2 # '\nSETTINGS readonly = 0 -- '",
    "SELECT 1) INTO OUTFILE '{OUT}' FORMAT TSV; SELECT * FROM (SELECT 1",
    // The function form of file(), with no trick at all.
    "SELECT file('{SECRET}')",
    "SELECT FILE('{SECRET}')",
    "SELECT `file`('{SECRET}')",
    "SELECT length(file('/proc/self/environ')) AS n",
    "SELECT * FROM (SELECT file('{SECRET}') AS s) WHERE s != ''",
    "SELECT event_type FROM ugc.events WHERE event_type = file('{SECRET}')",
    // Every table function named in the issue, and then some.
    "SELECT * FROM file('{SECRET}', 'LineAsString')",
    "SELECT * FROM file('{SECRET}', 'TSV', 'line String')",
    "SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString')",
    "SELECT * FROM s3('http://127.0.0.1:1/b/k', 'LineAsString')",
    "SELECT * FROM remote('127.0.0.1', system.users)",
    "SELECT * FROM remoteSecure('127.0.0.1', system.one)",
    "SELECT * FROM cluster('default', system.one)",
    "SELECT * FROM clusterAllReplicas('default', system.one)",
    "SELECT * FROM input('line String')",
    "SELECT * FROM executable('cat {SECRET}', 'LineAsString')",
    "SELECT * FROM mysql('127.0.0.1:1', 'db', 't', 'u', 'p')",
    "SELECT * FROM postgresql('127.0.0.1:1', 'db', 't', 'u', 'p')",
    "SELECT * FROM jdbc('jdbc:x', 'db', 't')",
    "SELECT * FROM odbc('DSN=x', 'db', 't')",
    "SELECT * FROM hdfs('hdfs://127.0.0.1:1/x', 'LineAsString')",
    "SELECT * FROM merge('system', '.*')",
    "SELECT * FROM view(SELECT file('{SECRET}'))",
    "SELECT * FROM viewExplain('EXPLAIN', '', (SELECT 1))",
    "SELECT * FROM dictionary('secrets')",
    "SELECT * FROM fileCluster('default', '{SECRET}', 'LineAsString')",
    "SELECT * FROM sqlite('{SECRET}', 't')",
    "SELECT count() FROM ugc.events WHERE event_type IN (SELECT * FROM file('{SECRET}', 'LineAsString'))",
    "SELECT * FROM ugc.events AS e JOIN file('{SECRET}', 'LineAsString') AS f ON 1 = 1",
    // clickhouse-local's overlay of the file system on `default`.
    "SELECT * FROM `{SECRET}`",
    "SELECT * FROM default.`{SECRET}`",
    // Comments and strings the engine knows and a hand lexer did not.
    "SELECT 1 #\nSETTINGS readonly = 0",
    "SELECT 1 #!\nSETTINGS readonly = 0",
    "SELECT $$x$$ AS a, file($${SECRET}$$)",
    "SELECT 1 /* /* nested */ SETTINGS readonly = 0 */ FROM system.users",
    "SELECT name /* /* */ FROM system.processes -- */ FROM system.settings",
    "SEL/**/ECT file('{SECRET}')",
    "SELECT 1 SETT/**/INGS readonly = 0",
    "SELECT file(concat('{SECRET}', ''))",
    "SELECT file(unhex(hex('{SECRET}')))",
    "SELECT file('\\x2f{SECRET}')",
    // Unicode look-alikes of keywords.
    "ＳＥＬＥＣＴ file('{SECRET}')",
    "SELECT 1 ЅETTINGS readonly = 0",
    // SETTINGS anywhere.
    "SELECT 1 SETTINGS readonly = 0",
    "SELECT 1 SETTINGS max_execution_time = 100000",
    "SELECT * FROM (SELECT 1 SETTINGS readonly = 0)",
    "WITH x AS (SELECT 1 SETTINGS readonly = 0) SELECT * FROM x",
    "SELECT 1 UNION ALL SELECT 2 SETTINGS readonly = 0",
    "SELECT count() FROM ugc.events SETTINGS max_memory_usage = 0",
    // CTEs and unions as carriers.
    "WITH s AS (SELECT file('{SECRET}') AS v) SELECT v FROM s",
    "SELECT 1 UNION ALL SELECT file('{SECRET}')",
    "SELECT name FROM system.tables UNION ALL SELECT name FROM system.users",
    // Output clauses.
    "SELECT 1 FORMAT TSV",
    "SELECT 1 INTO OUTFILE '{OUT}'",
    "SELECT 1 INTO OUTFILE '{OUT}' APPEND",
    "SELECT 1 INTO OUTFILE '{OUT}' TRUNCATE FORMAT CSV",
    // Several statements.
    "SELECT 1; SELECT file('{SECRET}')",
    "SELECT 1; DROP TABLE ugc.events",
    "SELECT 1;\nINSERT INTO ugc.events (event_type) VALUES ('x')",
    // The server's catalogue, users and settings.
    "SELECT * FROM system.users",
    "SELECT * FROM system.settings",
    "SELECT * FROM system.processes",
    "SELECT * FROM system.query_log",
    "SELECT * FROM system.grants",
    "SELECT * FROM system.zookeeper WHERE path = '/'",
    "SELECT * FROM system.macros",
    "SELECT * FROM system.clusters",
    "SELECT * FROM system.server_settings",
    "SELECT * FROM system.disks",
    "SELECT count() FROM ugc.events WHERE event_type IN system.users",
    "SELECT count() FROM ugc.events WHERE event_type GLOBAL IN system.processes",
    "SET readonly = 0",
    "SET max_execution_time = 100000",
    "ALTER USER default SETTINGS readonly = 0",
    // Dictionaries, including one that would read a file.
    "CREATE DICTIONARY ugc.d (k UInt64, v String) PRIMARY KEY k SOURCE(FILE(path '{SECRET}' format 'TSV')) LAYOUT(FLAT()) LIFETIME(0)",
    "SELECT dictGet('ugc.d', 'v', toUInt64(1))",
    "SELECT dictGetString('d', 'v', toUInt64(1))",
    "SELECT dictHas('d', toUInt64(1))",
    // Who am I, what is set, where am I.
    "SELECT currentUser()",
    "SELECT user()",
    "SELECT getSetting('readonly')",
    "SELECT getServerSetting('path')",
    "SELECT hostName(), getOSKernelVersion()",
    "SELECT joinGet('ugc.events', 'data', 'x')",
    // Writes and administration.
    "ATTACH TABLE ugc.x FROM '{SECRET}' (s String) ENGINE = File(LineAsString)",
    "INSERT INTO ugc.events (event_type) VALUES ('x')",
    "INSERT INTO FUNCTION file('{OUT}', 'TSV', 's String') VALUES ('x')",
    "ALTER TABLE ugc.events DELETE WHERE 1",
    "DROP TABLE ugc.events",
    "DROP DATABASE ugc",
    "TRUNCATE TABLE ugc.events",
    "OPTIMIZE TABLE ugc.events FINAL",
    "KILL QUERY WHERE 1",
    "CREATE TABLE ugc.f (s String) ENGINE = File(LineAsString, '{SECRET}')",
    "RENAME TABLE ugc.events TO ugc.gone",
    "SYSTEM SHUTDOWN",
    "EXPLAIN SELECT file('{SECRET}')",
    "SELECT * FROM (EXPLAIN SELECT 1)",
    "DESCRIBE TABLE file('{SECRET}', 'LineAsString')",
    "SHOW CREATE TABLE ugc.events",
    "BACKUP TABLE ugc.events TO File('{OUT}')",
];

/// Ordinary analytics SQL over `ugc.events` and `ugc.progress`: must answer 200.
/// Window functions and `WITH name AS (subquery)` exist on chDB only (18.16 has
/// neither), so the server stores get the rest.
fn ordinary(on_server: bool) -> Vec<&'static str> {
    let mut q = vec![
        "SELECT event_type, count() AS n FROM ugc.events GROUP BY event_type ORDER BY event_type",
        "SELECT event_type, count() AS n FROM events GROUP BY event_type WITH TOTALS",
        "SELECT event_type, count() AS n FROM ugc.events WHERE 0 GROUP BY event_type WITH TOTALS",
        "WITH 60 AS min_pos SELECT toString(film_id) AS f, count() AS n FROM ugc.events \
         WHERE position >= min_pos GROUP BY film_id ORDER BY n DESC LIMIT 10",
        "SELECT user_id, n, p FROM (SELECT user_id, count() AS n FROM ugc.events GROUP BY user_id) AS a \
         ALL INNER JOIN (SELECT user_id, count() AS p FROM ugc.progress GROUP BY user_id) AS b USING user_id",
        // Every column: through a Distributed table 18.16 can lose a sorting-key column that
        // is not selected ("Cannot find column finished in source stream") when FINAL
        // merges parts.
        "SELECT * FROM ugc.progress FINAL ORDER BY user_id, film_id",
        "SELECT arrayJoin([1, 2, 3]) AS x, x * 2 AS y",
        "SELECT event_type, x FROM ugc.events ARRAY JOIN [1, 2] AS x ORDER BY event_type, x LIMIT 4",
        "SELECT user_id, event_type FROM ugc.events ORDER BY user_id, event_type LIMIT 1 BY user_id",
        "SELECT count() AS n FROM ugc.events WHERE user_id GLOBAL IN (SELECT user_id FROM ugc.progress)",
        "SELECT count() AS n FROM (SELECT DISTINCT user_id FROM ugc.events)",
        "SELECT name FROM system.tables WHERE database = 'ugc' ORDER BY name",
        "SELECT 'a file(''/etc/passwd'') in a string' AS s",
        "SELECT count() AS n FROM ugc.events WHERE data NOT LIKE '%SETTINGS%'",
        "SELECT max(position) AS m FROM ugc.events -- a comment with SETTINGS readonly = 0",
    ];
    if !on_server {
        q.extend([
            "WITH per_user AS (SELECT user_id, count() AS n FROM ugc.events GROUP BY user_id) \
             SELECT user_id, n, row_number() OVER (ORDER BY n DESC, user_id) AS rank FROM per_user",
            "SELECT event_type, count() OVER (PARTITION BY user_id) AS c FROM ugc.events",
        ]);
    }
    q
}

#[tokio::test]
async fn hostile_statements_are_refused_and_ordinary_ones_answer() {
    // No secret given: the server generates `<data-dir>/jwt-secret`, the file an
    // analyst would most like to read.
    let server = Server::start_without_secret(&[]).await;
    let secret_path = server.data_dir().join("jwt-secret");
    let secret = std::fs::read_to_string(&secret_path).expect("the generated jwt-secret");
    let secret = secret.trim();
    assert!(secret.len() >= 16, "a real secret: {secret:?}");
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("written-by-analyst");

    // Some rows in both tables, so an ordinary query has something to answer with.
    let user = new_user();
    let viewer = server.token(&user, &[]);
    let film = uuid::Uuid::new_v4().to_string();
    let (status, body) = server
        .post(
            "/api/v1/events/batch",
            &viewer,
            &json!([
                {"type": "view_progress", "film_id": film, "film_timestamp": 60},
                {"type": "pause", "film_id": film, "position": 61},
                {"type": "quality_change", "film_id": film, "from": "720p", "to": "1080p", "position": 62},
            ]),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    server
        .wait_for(
            &format!("SELECT uniqExact(event_id) AS n FROM ugc.events WHERE user_id = '{user}'"),
            json!(3),
            Duration::from_secs(30),
        )
        .await;

    let analyst = server.token(&new_user(), &["analyst"]);
    let mut refused = 0;
    for template in HOSTILE {
        let sql = template
            .replace("{SECRET}", secret_path.to_str().unwrap())
            .replace("{OUT}", out.to_str().unwrap());
        let r = server
            .http
            .post(format!("{}/api/v1/query", server.base))
            .bearer_auth(&analyst)
            .json(&json!({ "sql": sql }))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert!(
            !text.contains(secret),
            "the JWT secret leaked through {sql:?}: {text}"
        );
        assert!(
            !text.contains("root:x:0:0"),
            "a file leaked through {sql:?}: {text}"
        );
        assert!(
            status == 403 || status == 422,
            "{sql:?} answered {status}, not a refusal: {text}"
        );
        let body: Value = serde_json::from_str(&text).unwrap();
        if status == 422 {
            assert_eq!(body["errors"][0]["field"], "sql", "{sql:?}: {body}");
        }
        assert!(!out.exists(), "{sql:?} wrote {}", out.display());
        refused += 1;
    }
    assert!(refused >= 60, "only {refused} hostile statements");

    // The tables are all still there, untouched.
    let tables = server
        .sql("SELECT name FROM system.tables WHERE database = 'ugc' ORDER BY name")
        .await;
    let names: Vec<&str> = tables.iter().filter_map(|r| r["name"].as_str()).collect();
    for t in ["events", "progress", "dead_letters"] {
        assert!(names.contains(&t), "{t} missing: {names:?}");
    }

    let on_server = std::env::var("UGC_TEST_STORE").is_ok_and(|s| s != "chdb" && !s.is_empty());
    for sql in ordinary(on_server) {
        let (status, body) = server
            .post("/api/v1/query", &analyst, &json!({ "sql": sql }))
            .await;
        assert_eq!(status, 200, "{sql}: {body}");
    }
    // And they answer what was stored.
    let rows = server
        .sql(&format!(
            "SELECT event_type, uniqExact(event_id) AS n FROM ugc.events WHERE user_id = '{user}' \
             GROUP BY event_type ORDER BY event_type"
        ))
        .await;
    assert_eq!(
        rows,
        vec![
            json!({"event_type": "pause", "n": 1}),
            json!({"event_type": "quality_change", "n": 1}),
            json!({"event_type": "view_progress", "n": 1}),
        ]
    );
    let (_, body) = server
        .post(
            "/api/v1/query",
            &analyst,
            &json!({ "sql": "SELECT event_type, count() AS n FROM ugc.events WHERE 0 GROUP BY event_type WITH TOTALS" }),
        )
        .await;
    assert_eq!(body["row_count"], 0, "{body}");
}

#[tokio::test]
async fn analysts_limits_hold_whatever_the_statement_says() {
    let server = Server::start(&["--query-timeout-secs", "1"]).await;
    let analyst = server.token(&new_user(), &["analyst"]);
    // An endless scan stops at the fixed time limit: 422 naming `sql`, not a hang.
    let started = std::time::Instant::now();
    let (status, body) = server
        .post(
            "/api/v1/query",
            &analyst,
            &json!({ "sql": "SELECT count() FROM system.numbers" }),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "sql", "{body}");
    assert!(started.elapsed() < Duration::from_secs(20));
    // Rows are capped by the service, whatever LIMIT the statement asks for.
    let (status, body) = server
        .post(
            "/api/v1/query",
            &analyst,
            &json!({ "sql": "SELECT number FROM system.numbers LIMIT 100000" }),
        )
        .await;
    assert_eq!(
        (status, body["truncated"].as_bool()),
        (200, Some(true)),
        "{body}"
    );
}
