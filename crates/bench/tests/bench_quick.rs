//! Black-box: `ugc-bench --quick` runs every scenario against real servers it starts
//! itself and writes its results. It checks that the harness works, not speed.

use std::process::Command;

use serde_json::Value;

#[test]
fn bench_quick_measures_every_scenario_against_its_baseline_and_writes_results() {
    let out = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    // The system under test is the `ugc` binary the workspace builds beside this one.
    let bench = std::path::Path::new(env!("CARGO_BIN_EXE_ugc-bench"));
    let ugc = bench.with_file_name("ugc");
    assert!(
        ugc.exists(),
        "the ugc binary is not at {}: build the workspace (cargo build -p ugc)",
        ugc.display()
    );
    let run = Command::new(bench)
        .args(["--quick", "--ugc-bin"])
        .arg(&ugc)
        .arg("--out")
        .arg(out.path())
        .arg("--work-dir")
        .arg(work.path())
        .output()
        .expect("cannot run ugc-bench");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "ugc-bench --quick failed ({}):\n{stdout}\n{stderr}",
        run.status
    );

    let results: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("results.json")).unwrap()).unwrap();
    let outcomes = results["outcomes"].as_array().expect("outcomes");
    // The test command provides the broker and the server: every backend is measured.
    let backends = [
        ("embedded log + chDB", &["1", "2", "3", "4", "5a", "5b"][..]),
        ("Kafka-protocol broker + chDB", &["1", "2", "3", "4"][..]),
        (
            "Kafka-protocol broker + ClickHouse server, API and loader apart",
            &["1", "2", "3", "4", "5a", "5b"][..],
        ),
    ];
    for (backend, ids) in backends {
        for id in ids {
            let o = outcomes
                .iter()
                .find(|o| o["id"] == *id && o["backend"] == backend)
                .unwrap_or_else(|| {
                    panic!("no outcome for scenario {id} on {backend}: {results:#}")
                });
            assert_eq!(o["status"], "ok", "scenario {id} on {backend}: {o:#}");
            for side in ["figure", "baseline"] {
                let v = o[side]["value"].as_f64().unwrap_or(0.0);
                assert!(v > 0.0, "scenario {id} on {backend}: {side} is {v}: {o:#}");
            }
            let ratio = o["ratio"].as_f64().unwrap_or(0.0);
            assert!(ratio > 0.0, "scenario {id} on {backend}: ratio {ratio}");
            assert!(
                o["target"]["text"].is_string(),
                "scenario {id} on {backend} has a target"
            );
        }
    }
    // The sustained figures (1s, 1p): acknowledged and stored, against the ceiling, with the
    // CPU each stored event cost; 1s has the all-in-one target.
    for (backend, _) in backends {
        for id in ["1s", "1p"] {
            let o = outcomes
                .iter()
                .find(|o| o["id"] == id && o["backend"] == backend)
                .unwrap_or_else(|| panic!("no outcome for scenario {id} on {backend}"));
            assert_eq!(o["status"], "ok", "scenario {id} on {backend}: {o:#}");
            assert!(o["ratio"].as_f64().unwrap_or(0.0) > 0.0, "{o:#}");
            let cpu = o["more"]
                .as_array()
                .and_then(|m| {
                    m.iter()
                        .find(|m| m["what"] == "CPU per stored event, ugc")
                        .and_then(|m| m["value"].as_f64())
                })
                .unwrap_or(0.0);
            assert!(cpu > 0.0, "scenario {id} on {backend}: {o:#}");
        }
    }
    let sustained = outcomes
        .iter()
        .find(|o| o["id"] == "1s" && o["backend"] == "embedded log + chDB")
        .unwrap();
    assert!(sustained["target"]["text"].is_string(), "{sustained:#}");
    // Content: seeded, then the mix over HTTP against the same statements without HTTP,
    // with each route's percentiles against its target, on both databases.
    for backend in ["content on SQLite", "content on PostgreSQL"] {
        for id in ["7s", "7", "7a", "7b", "7c", "7d", "7e"] {
            let o = outcomes
                .iter()
                .find(|o| o["id"] == id && o["backend"] == backend)
                .unwrap_or_else(|| panic!("no outcome for scenario {id} on {backend}"));
            assert_eq!(o["status"], "ok", "scenario {id} on {backend}: {o:#}");
            assert!(
                o["figure"]["value"].as_f64().unwrap_or(0.0) > 0.0,
                "scenario {id} on {backend}: {o:#}"
            );
            if id != "7s" {
                assert!(
                    o["baseline"]["value"].as_f64().unwrap_or(0.0) > 0.0,
                    "scenario {id} on {backend}: {o:#}"
                );
            }
            // 7a..7e: one route's latency each, against its target.
            if id.len() == 2 && id != "7s" {
                assert!(
                    o["figure"]["latency_ms"]["p50"].as_f64().unwrap_or(0.0) > 0.0,
                    "scenario {id} on {backend}: {o:#}"
                );
                assert!(o["target"]["text"].is_string(), "{o:#}");
            }
        }
    }
    // Every HTTP phase has its percentiles.
    for o in outcomes
        .iter()
        .filter(|o| ["1", "2"].contains(&o["id"].as_str().unwrap_or("")))
    {
        if o["status"] == "ok" {
            assert!(
                o["figure"]["latency_ms"]["p999"].as_f64().unwrap_or(0.0) > 0.0,
                "{o:#}"
            );
        }
    }

    let md = std::fs::read_to_string(out.path().join("results.md")).unwrap();
    assert!(
        md.contains("| 1 single-event ingest (embedded log + chDB) | ≥ 60% |"),
        "{md}"
    );
    let svg = std::fs::read_to_string(out.path().join("chart.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("Latency percentiles"),
        "chart.svg"
    );
    assert!(
        stdout.contains("single-event ingest"),
        "the table is printed: {stdout}"
    );
    assert!(
        std::fs::read_dir(work.path()).unwrap().next().is_none(),
        "the run removes its data"
    );
}
