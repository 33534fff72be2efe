//! Results: the table on stdout, `results.json`, `results.md`.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::load::Percentiles;
use crate::progress::thousands;

/// One measured figure.
#[derive(Clone, Debug, Serialize)]
pub struct Measure {
    pub what: String,
    pub value: f64,
    pub unit: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<Percentiles>,
    /// CPU the process under test used, in cores (of 2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_cores: Option<f64>,
    /// CPU the load generator used, in cores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cpu_cores: Option<f64>,
}

impl Measure {
    pub fn new(what: impl Into<String>, value: f64, unit: &str) -> Self {
        Self {
            what: what.into(),
            value,
            unit: unit.into(),
            latency_ms: None,
            server_cpu_cores: None,
            client_cpu_cores: None,
        }
    }

    pub fn show(&self) -> String {
        match self.unit.as_str() {
            "MB" => format!("{:.0} MB", self.value),
            "ms" => format!("{} ms", ms(self.value)),
            "µs" => format!("{:.1} µs", self.value),
            u => format!("{} {u}", thousands(self.value)),
        }
    }
}

/// How a figure compares with its target.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub text: String,
    pub met: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// "1" .. "4", "5a" (API memory), "5b" (loader memory).
    pub id: String,
    pub title: String,
    pub backend: String,
    /// "ok", "not available yet", or "failed".
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub figure: Option<Measure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Measure>,
    /// figure / baseline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// Secondary figures of the same measurement.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub more: Vec<Measure>,
}

impl Outcome {
    pub fn new(id: &str, title: &str, backend: &str) -> Self {
        Self {
            id: id.into(),
            title: title.into(),
            backend: backend.into(),
            status: "ok".into(),
            error: None,
            figure: None,
            baseline: None,
            ratio: None,
            target: None,
            more: vec![],
        }
    }

    pub fn unavailable(id: &str, title: &str, backend: &str) -> Self {
        Self {
            status: "not available yet".into(),
            ..Self::new(id, title, backend)
        }
    }

    pub fn failed(id: &str, title: &str, backend: &str, e: &anyhow::Error) -> Self {
        Self {
            status: "failed".into(),
            error: Some(format!("{e:#}")),
            ..Self::new(id, title, backend)
        }
    }

    pub fn measured(mut self, figure: Measure, baseline: Measure) -> Self {
        self.ratio = (baseline.value > 0.0).then(|| figure.value / baseline.value);
        self.figure = Some(figure);
        self.baseline = Some(baseline);
        self
    }

    fn ratio_text(&self) -> String {
        match (self.ratio, self.figure.as_ref().map(|f| f.unit.as_str())) {
            // Throughputs read as a share of the baseline; latency and memory as a multiple.
            (Some(r), Some("ms" | "MB")) => format!("{r:.2}×"),
            (Some(r), _) => format!("{:.1}%", r * 100.0),
            (None, _) => "–".into(),
        }
    }
}

/// Milliseconds with sensible precision.
pub fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gb: f64,
    pub kernel: String,
}

impl Machine {
    /// How reports name the machine: "2 CPUs (model), 23.5 GB RAM, Linux 6.x".
    pub fn describe(&self) -> String {
        format!(
            "{} CPUs ({}), {} GB RAM, Linux {}",
            self.cpus, self.cpu_model, self.memory_gb, self.kernel
        )
    }

    pub fn probe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let field = |text: &str, key: &str| {
            text.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
                .unwrap_or_default()
        };
        let mem_kb: f64 = field(&meminfo, "MemTotal")
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        Self {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: field(&cpuinfo, "model name"),
            memory_gb: (mem_kb / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
        }
    }
}

/// A throughput timeline of one phase, for the chart.
#[derive(Clone, Debug, Serialize)]
pub struct Series {
    pub name: String,
    /// (seconds, events per second).
    pub points: Vec<(f64, f64)>,
}

#[derive(Debug, Serialize)]
pub struct Results {
    pub suite: String,
    pub command: String,
    pub started_at: String,
    pub wall_secs: f64,
    pub build: String,
    pub machine: Machine,
    pub settings: serde_json::Value,
    pub outcomes: Vec<Outcome>,
    pub throughput: Vec<Series>,
    /// Latency percentiles of each HTTP phase, for the chart.
    pub latency: Vec<(String, Percentiles)>,
    pub notes: Vec<String>,
}

impl Results {
    pub fn table(&self) -> String {
        let mut rows = vec![[
            "#".to_string(),
            "scenario".into(),
            "backend".into(),
            "figure".into(),
            "baseline".into(),
            "ratio".into(),
            "target".into(),
        ]];
        for o in &self.outcomes {
            let (figure, baseline) = match (&o.figure, &o.baseline) {
                (Some(f), Some(b)) => (f.show(), format!("{} ({})", b.show(), b.what)),
                // A figure with nothing to compare it with (how long seeding took).
                (Some(f), None) if o.status == "ok" => (f.show(), String::new()),
                _ => (
                    match &o.error {
                        Some(e) => format!("{}: {}", o.status, first_line(e)),
                        None => o.status.clone(),
                    },
                    String::new(),
                ),
            };
            let target = o.target.as_ref().map_or(String::new(), |t| {
                format!("{} {}", t.text, if t.met { "✓" } else { "✗" })
            });
            rows.push([
                o.id.clone(),
                o.title.clone(),
                o.backend.clone(),
                figure,
                baseline,
                o.ratio_text(),
                target,
            ]);
        }
        let widths: Vec<usize> = (0..7)
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for (i, r) in rows.iter().enumerate() {
            let line: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            let _ = writeln!(out, "{}", line.join("  ").trim_end());
            if i == 0 {
                let _ = writeln!(out, "{}", "-".repeat(widths.iter().sum::<usize>() + 12));
            }
        }
        out
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# Benchmark results\n");
        let _ = writeln!(
            md,
            "`{}` · {} build · {} · {} · took {:.0} s\n",
            self.command,
            self.build,
            self.started_at,
            self.machine.describe(),
            self.wall_secs
        );
        let _ = writeln!(
            md,
            "Every figure is compared with a baseline measured in the same run on the same machine. \
             How to reproduce and what each baseline is: [bench/README.md](../README.md).\n"
        );
        let _ = writeln!(md, "## Targets\n");
        let _ = writeln!(
            md,
            "| figure | target | measured | ratio to baseline | met |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|");
        for o in self
            .outcomes
            .iter()
            .filter(|o| o.target.is_some() || o.status != "ok")
        {
            let measured = match (&o.figure, &o.baseline) {
                (Some(f), Some(b)) => format!("{} vs {} ({})", f.show(), b.show(), b.what),
                _ => o.status.clone(),
            };
            let (target, met) = o.target.as_ref().map_or(("–".into(), "–"), |t| {
                (t.text.clone(), if t.met { "yes" } else { "**no**" })
            });
            let _ = writeln!(
                md,
                "| {} {} ({}) | {} | {} | {} | {} |",
                o.id,
                o.title,
                o.backend,
                target,
                measured,
                o.ratio_text(),
                met
            );
        }
        let _ = writeln!(md, "\n## Details\n");
        let _ = writeln!(
            md,
            "| # | measure | value | p50 ms | p90 ms | p99 ms | p99.9 ms | server CPU (cores) | client CPU (cores) |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
        for o in self.outcomes.iter().filter(|o| o.status == "ok") {
            for m in o
                .figure
                .iter()
                .chain(o.baseline.iter())
                .chain(o.more.iter())
            {
                let p = m.latency_ms.as_ref();
                let pct = |f: fn(&Percentiles) -> f64| p.map_or("".into(), |p| ms(f(p)));
                let cores = |c: Option<f64>| c.map_or(String::new(), |c| format!("{c:.2}"));
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    o.id,
                    m.what,
                    m.show(),
                    pct(|p| p.p50),
                    pct(|p| p.p90),
                    pct(|p| p.p99),
                    pct(|p| p.p999),
                    cores(m.server_cpu_cores),
                    cores(m.client_cpu_cores),
                );
            }
        }
        if !self.notes.is_empty() {
            let _ = writeln!(md, "\n## Notes\n");
            for n in &self.notes {
                let _ = writeln!(md, "- {n}");
            }
        }
        let _ = writeln!(md, "\n## Settings\n\n```json\n{:#}\n```", self.settings);
        let _ = writeln!(md, "\n![throughput and latency](chart.svg)");
        md
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join("results.json"),
            serde_json::to_string_pretty(self)? + "\n",
        )?;
        std::fs::write(dir.join("results.md"), self.markdown())?;
        crate::chart::draw(self, &dir.join("chart.svg"))?;
        Ok(())
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(120).collect()
}
