//! What `bench` reports: one run's drain and steady-phase figures, the medians and ratios over runs, and how they
//! are printed (the JSON is these types serialized).

use std::collections::BTreeMap;

use serde::Serialize;

use super::ingester::Kind;
use super::pg;
use crate::loadgen::Profile;

/// One drain of the backlog by one ingester.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Drain {
    pub seconds: f64,
    pub events_per_second: f64,
    pub messages_per_second: f64,
    pub rows: BTreeMap<String, i64>,
    pub rows_per_second: f64,
    pub job_states: BTreeMap<i16, i64>,
    /// True when the jobs per state are what the stream says.
    pub job_states_as_expected: bool,
    pub postgres_cpu_seconds: Option<f64>,
    pub postgres_cpu_us_per_event: Option<f64>,
    pub statements_ms: Option<f64>,
    /// The most expensive statements: (total ms, calls, query).
    pub statements_top: Vec<(f64, i64, String)>,
    pub ingester_cpu_seconds: Option<f64>,
    pub ingester_cpu_us_per_event: Option<f64>,
    pub peak_rss_mib: Option<f64>,
    /// (seconds since start, events committed, lag: age of the oldest uncommitted message in seconds)
    pub series: Vec<(f64, f64, f64)>,
}

/// The steady phase after a drain.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Steady {
    pub target_events_per_second: f64,
    pub published_events_per_second: f64,
    pub seconds: f64,
    pub events: usize,
    pub probes: usize,
    pub probes_not_seen: usize,
    pub p50_seconds: Option<f64>,
    pub p99_seconds: Option<f64>,
    pub postgres_cpu_seconds: Option<f64>,
    pub ingester_cpu_seconds: Option<f64>,
    /// (seconds since the phase started, publish → visible of one probe)
    pub series: Vec<(f64, f64)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub ingester: Kind,
    pub index: usize,
    pub load_average_before: String,
    pub load_average_after: String,
    pub drain: Drain,
    pub steady: Option<Steady>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub command: String,
    pub started_at: String,
    pub machine: String,
    pub profile: Profile,
    pub seed: u64,
    pub partitions: u32,
    pub jobs: usize,
    pub events: usize,
    pub messages: usize,
    pub outcomes: BTreeMap<&'static str, usize>,
    /// How busy the machine was before the runs, with nothing of the bench running.
    pub idle_before: super::sys::Idle,
    pub postgres_cpu_measured: bool,
    pub pg_stat_statements: bool,
    pub reference_migrated_by: Option<String>,
    pub copy_baseline: Option<pg::CopyBaseline>,
    pub runs: Vec<Run>,
    /// Medians per ingester and ratios ours / reference.
    pub summary: BTreeMap<String, Figure>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Figure {
    pub ours: Option<f64>,
    pub reference: Option<f64>,
    pub ratio: Option<f64>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

/// The figures of the summary, each as a function of one run.
type Metric = (&'static str, fn(&Run) -> Option<f64>);

const METRICS: &[Metric] = &[
    ("drain_events_per_second", |r| Some(r.drain.events_per_second)),
    ("drain_rows_per_second", |r| Some(r.drain.rows_per_second)),
    ("drain_seconds", |r| Some(r.drain.seconds)),
    ("postgres_cpu_seconds", |r| r.drain.postgres_cpu_seconds),
    ("postgres_cpu_us_per_event", |r| r.drain.postgres_cpu_us_per_event),
    ("statements_ms", |r| r.drain.statements_ms),
    ("ingester_cpu_seconds", |r| r.drain.ingester_cpu_seconds),
    ("ingester_cpu_us_per_event", |r| r.drain.ingester_cpu_us_per_event),
    ("peak_rss_mib", |r| r.drain.peak_rss_mib),
    ("steady_p50_seconds", |r| r.steady.as_ref().and_then(|s| s.p50_seconds)),
    ("steady_p99_seconds", |r| r.steady.as_ref().and_then(|s| s.p99_seconds)),
    ("steady_postgres_cpu_seconds", |r| r.steady.as_ref().and_then(|s| s.postgres_cpu_seconds)),
    ("steady_ingester_cpu_seconds", |r| r.steady.as_ref().and_then(|s| s.ingester_cpu_seconds)),
];

pub(super) fn summarize(runs: &[Run], copy: Option<&pg::CopyBaseline>) -> BTreeMap<String, Figure> {
    let mut out = BTreeMap::new();
    for (name, f) in METRICS {
        let of = |kind: Kind| median(runs.iter().filter(|r| r.ingester == kind).filter_map(f).collect());
        let (ours, reference) = (of(Kind::Ours), of(Kind::Reference));
        let ratio = ours.zip(reference).filter(|(_, r)| *r != 0.0).map(|(o, r)| o / r);
        out.insert(name.to_string(), Figure { ours, reference, ratio });
    }
    if let Some(c) = copy {
        let ours = out["drain_rows_per_second"].ours;
        out.insert(
            "rows_per_second_vs_plain_copy".into(),
            Figure { ours, reference: Some(c.rows_per_second), ratio: ours.map(|o| o / c.rows_per_second) },
        );
    }
    out
}

pub(super) fn fmt(v: Option<f64>) -> String {
    match v {
        Some(x) if x.abs() >= 100.0 => format!("{x:.0}"),
        Some(x) if x.abs() >= 1.0 => format!("{x:.2}"),
        Some(x) => format!("{x:.3}"),
        None => "–".into(),
    }
}

pub(super) fn print_run(r: &Run) {
    let d = &r.drain;
    println!(
        "run {} {:<9} drain {:.1} s: {:.0} events/s, {:.0} rows/s, Postgres CPU {} s, statements {} ms, ingester CPU {} s, peak RSS {} MiB, states {}; load {} → {}",
        r.index,
        r.ingester.name(),
        d.seconds,
        d.events_per_second,
        d.rows_per_second,
        fmt(d.postgres_cpu_seconds),
        fmt(d.statements_ms),
        fmt(d.ingester_cpu_seconds),
        fmt(d.peak_rss_mib),
        if d.job_states_as_expected { "as expected" } else { "NOT as expected" },
        r.load_average_before,
        r.load_average_after
    );
    if let Some(s) = &r.steady {
        println!(
            "      steady {:.0} events/s for {:.0} s: publish→visible p50 {} s, p99 {} s ({} probes, {} not seen), Postgres CPU {} s, ingester CPU {} s",
            s.published_events_per_second,
            s.seconds,
            fmt(s.p50_seconds),
            fmt(s.p99_seconds),
            s.probes,
            s.probes_not_seen,
            fmt(s.postgres_cpu_seconds),
            fmt(s.ingester_cpu_seconds)
        );
    }
}

pub(super) fn print_summary(r: &Report) {
    println!(
        "\nprofile {}, {} events ({} jobs, {} messages), {} partitions; medians over {} run(s) per ingester",
        r.profile.name(),
        r.events,
        r.jobs,
        r.messages,
        r.partitions,
        r.runs.iter().filter(|x| x.ingester == Kind::Ours).count()
    );
    println!("{:<34} {:>12} {:>12} {:>8}", "figure", "ours", "reference", "ratio");
    for (name, f) in &r.summary {
        println!("{name:<34} {:>12} {:>12} {:>8}", fmt(f.ours), fmt(f.reference), fmt(f.ratio));
    }
    if let Some(c) = &r.copy_baseline {
        println!(
            "plain binary COPY of our {} final rows: {:.2} s = {:.0} rows/s, Postgres CPU {} s",
            c.rows,
            c.seconds,
            c.rows_per_second,
            fmt(c.postgres_cpu_seconds)
        );
    }
}
