//! The `bench` subcommand: measures the service end to end on a load-generator profile, optionally beside
//! Armada's Go `lookoutingester`, in one run on one machine.
//!
//! Per run and ingester: a fresh partitioned topic with its subscription, the profile's backlog published to it
//! (keyed, zlib, producer batching), a fresh database, then the ingester is started and times the drain (until the
//! subscription's mark-delete position reaches the last published entry on every partition, read from the admin
//! API, which works the same for both ingesters). Then a steady phase publishes a new stream of the same profile
//! at half our measured drain rate and probes the database for each sampled message's effect (a job row created,
//! a job ended) to time publish → visible. Measured: events/s, final rows/s, Postgres CPU (all processes of the
//! cluster, when it is local) and `pg_stat_statements` time (when the extension is preloaded), ingester CPU and
//! peak RSS, and p50/p99 publish → visible. The same run also times a plain binary COPY of our drain's final rows
//! into empty copies of the tables. With `--reference`, runs alternate ours / reference (ABBA) and every figure is
//! also given as a ratio ours / reference over the medians. Writes `bench.json` and `bench.png` (gnuplot).

pub mod chart;
pub mod ingester;
pub mod pg;
pub mod report;
pub mod sys;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::loadgen::publish::{Options, Publisher, Sent};
use crate::loadgen::topic::Topic;
use crate::loadgen::{DEFAULT_START, ProbeKind, Profile, Size, Spec, Stream, generate};
use crate::source::admin::Admin;
use ingester::Kind;
pub use report::{Drain, Figure, Report, Run, Steady};
use report::{print_run, print_summary, summarize};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Workload profile of the backlog and the steady phase.
    #[arg(long, value_enum, default_value = "short")]
    pub profile: Profile,
    /// Backlog size: at least this many events (whole job lives).
    #[arg(long, default_value_t = 300_000)]
    pub events: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
    /// Runs per ingester (alternating ours / reference, ABBA).
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Seconds of steady load at half our drain rate after the drain (0: none).
    #[arg(long, default_value_t = 30)]
    pub steady: u64,
    /// Armada's `lookoutingester` binary: also run it, on its own fresh database and topic.
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Armada's `lookout` binary, to migrate the reference's database (default: `lookout` beside --reference;
    /// without it our migrations, which create the same Lookout schema plus our own tables, are used).
    #[arg(long)]
    pub reference_lookout: Option<PathBuf>,
    /// Our binary (default: this one).
    #[arg(long)]
    pub ingester: Option<PathBuf>,
    /// Pulsar admin URL.
    #[arg(long, env = "PULSAR_ADMIN_URL", default_value = "http://127.0.0.1:8080")]
    pub admin_url: String,
    /// Directory for bench.json, bench.png and the ingesters' logs.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    /// Keep the databases and topics.
    #[arg(long)]
    pub keep: bool,
    /// Give up a drain after this many seconds.
    #[arg(long, default_value_t = 1800)]
    pub timeout: u64,
    /// Port for the ingesters' metrics endpoints.
    #[arg(long, default_value_t = 9402)]
    pub metrics_port: u16,
}

struct Bench {
    args: Args,
    pulsar_url: String,
    /// One admin client (one connection pool) for every run, polled every 250 ms while a drain is timed.
    admin: Admin,
    admin_db_url: String,
    cluster: pg::Cluster,
    stamp: u64,
    ours: PathBuf,
    lookout: Option<PathBuf>,
    stream: Stream,
    copy: Option<pg::CopyBaseline>,
}

/// Above this many busy CPUs before the runs, the bench warns that its figures are skewed.
const IDLE_WARNING_CPUS: f64 = 0.25;

pub async fn run(args: Args, pulsar_url: &str, database_url: Option<String>) -> Result<()> {
    let admin_db_url = database_url
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .context("a Postgres URL is needed: --database-url or DATABASE_URL (a role that can create databases)")?;
    if args.runs == 0 || args.partitions == 0 {
        bail!("--runs and --partitions must be at least 1");
    }
    let cluster = pg::Cluster::connect(&admin_db_url).await?;
    let ours = match &args.ingester {
        Some(p) => p.clone(),
        None => std::env::current_exe()?,
    };
    let lookout = args.reference_lookout.clone().or_else(|| {
        let sibling = args.reference.as_ref()?.with_file_name("lookout");
        sibling.exists().then_some(sibling)
    });
    let spec = Spec { profile: args.profile, size: Size::Events(args.events), seed: args.seed, start: DEFAULT_START };
    let stream = generate(&spec);
    eprintln!(
        "[bench] {}: {} jobs, {} events in {} messages, {} partitions; Postgres CPU {}, pg_stat_statements {}",
        args.profile.name(),
        stream.jobs,
        stream.events,
        stream.messages.len(),
        args.partitions,
        if cluster.postmaster.is_some() { "measured" } else { "not measured (cluster not local)" },
        if cluster.statements { "on" } else { "off (not in shared_preload_libraries)" },
    );
    let idle = sys::idle(Duration::from_secs(3)).await;
    let top =
        idle.top.as_ref().map_or(String::new(), |(name, pid, cpus)| format!("; busiest: {name} (pid {pid}) {cpus:.2}"));
    eprintln!("[bench] before the runs, with nothing of ours running: {:.2} CPUs busy{top}", idle.busy_cpus);
    if idle.busy_cpus > IDLE_WARNING_CPUS {
        eprintln!(
            "[bench] WARNING: the machine is busy before any run ({:.2} CPUs); every figure below is skewed by it{top}",
            idle.busy_cpus
        );
    }
    std::fs::create_dir_all(&args.out)?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let mut bench = Bench {
        args: args.clone(),
        pulsar_url: pulsar_url.to_string(),
        admin: Admin::new(&args.admin_url),
        admin_db_url,
        cluster,
        stamp,
        ours,
        lookout,
        stream,
        copy: None,
    };
    let mut runs = Vec::new();
    let kinds: Vec<Kind> = if args.reference.is_some() { vec![Kind::Ours, Kind::Reference] } else { vec![Kind::Ours] };
    for k in 0..args.runs {
        let mut order = kinds.clone();
        if k % 2 == 1 {
            order.reverse();
        }
        for kind in order {
            let steady_rate =
                runs.iter().find(|r: &&Run| r.ingester == Kind::Ours).map(|r| r.drain.events_per_second / 2.0);
            let run = bench.one(kind, k, steady_rate).await?;
            print_run(&run);
            runs.push(run);
        }
    }
    let report = Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        started_at: chrono::Utc::now().to_rfc3339(),
        machine: machine(),
        profile: args.profile,
        seed: args.seed,
        partitions: args.partitions,
        jobs: bench.stream.jobs,
        events: bench.stream.events,
        messages: bench.stream.messages.len(),
        outcomes: bench.stream.outcomes.clone(),
        idle_before: idle,
        postgres_cpu_measured: bench.cluster.postmaster.is_some(),
        pg_stat_statements: bench.cluster.statements,
        reference_migrated_by: args.reference.as_ref().map(|_| match &bench.lookout {
            Some(l) => format!("{} --migrateDatabase", l.display()),
            None => "lookout-ingester migrate".into(),
        }),
        summary: summarize(&runs, bench.copy.as_ref()),
        copy_baseline: bench.copy.clone(),
        runs,
    };
    print_summary(&report);
    let json = args.out.join("bench.json");
    std::fs::write(&json, serde_json::to_string_pretty(&report)?)?;
    eprintln!("[bench] wrote {}", json.display());
    match chart::draw(&report, &args.out) {
        Ok(png) => eprintln!("[bench] wrote {}", png.display()),
        Err(e) => eprintln!("[bench] no chart: {e:#}"),
    }
    Ok(())
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|kb| kb.parse::<f64>().ok()))
        .map(|kb| kb / 1048576.0)
        .unwrap_or(0.0);
    format!("{cpus} CPUs ({model}), {mem:.0} GiB")
}

/// Events committed per partition position, from what was published.
struct Progress {
    /// Per partition: (ledger, entry, events up to and including this entry, when its first message was sent)
    entries: Vec<Vec<(i64, i64, usize, Duration)>>,
}

impl Progress {
    fn new(stream: &Stream, sent: &[Sent], partitions: u32) -> Progress {
        let mut entries: Vec<Vec<(i64, i64, usize, Duration)>> = vec![Vec::new(); partitions.max(1) as usize];
        let mut order: Vec<usize> = (0..sent.len()).collect();
        order.sort_by_key(|&i| (sent[i].partition, sent[i].ledger, sent[i].entry, i));
        for i in order {
            let s = sent[i];
            let p = &mut entries[s.partition as usize];
            let before = p.last().map_or(0, |e| e.2);
            match p.last_mut() {
                Some(last) if (last.0, last.1) == (s.ledger, s.entry) => last.2 += stream.messages[i].events as usize,
                _ => p.push((s.ledger, s.entry, before + stream.messages[i].events as usize, s.at)),
            }
        }
        Progress { entries }
    }

    /// (events committed, send time of the oldest uncommitted message; None when all are committed)
    fn at(&self, marks: &[Option<(i64, i64)>]) -> (usize, Option<Duration>) {
        let mut done = 0;
        let mut oldest: Option<Duration> = None;
        for (p, entries) in self.entries.iter().enumerate() {
            let mark = marks.get(p).copied().flatten();
            let n = match mark {
                Some(m) => entries.partition_point(|e| (e.0, e.1) <= m),
                None => 0,
            };
            done += if n == 0 { 0 } else { entries[n - 1].2 };
            if let Some(e) = entries.get(n) {
                oldest = Some(oldest.map_or(e.3, |o| o.min(e.3)));
            }
        }
        (done, oldest)
    }
}

impl Bench {
    async fn one(&mut self, kind: Kind, k: usize, steady_rate: Option<f64>) -> Result<Run> {
        let a = self.args.clone();
        let name = format!("bench_{}_{k}_{}", self.stamp, kind.name());
        let topic = Topic::parse(&format!("bench-{}-{k}-{}", self.stamp, kind.name()))?;
        let subscription = "bench";
        let dir = a.out.join(format!("run-{k}-{}", kind.name()));
        eprintln!("[bench] run {k} {}: topic {}, database {name}", kind.name(), topic.full());
        self.admin.create_partitioned(&topic.full(), a.partitions).await?;
        self.admin.ensure_subscription(&topic.full(), subscription).await?;
        let mut publisher = Publisher::connect(&self.pulsar_url, &topic, a.partitions).await?;
        let publish_started = Instant::now();
        let published =
            publisher.publish(&self.stream.messages, &Options { rate: None, progress: true, notify: None }).await?;
        eprintln!("[bench]   {}", published.summary(&topic.full()));
        let progress = Progress::new(&self.stream, &published.sent, a.partitions);

        let db = self.cluster.create(&name).await?;
        let db_url = pg::database_url(&self.admin_db_url, &name);
        let pool = pg::pool(&db).await?;
        match (kind, &self.lookout) {
            (Kind::Reference, Some(lookout)) => ingester::migrate_reference(lookout, &db, &dir.join("migrate")).await?,
            _ => {
                crate::migrate::migrate(&pool).await?;
            }
        }
        let binary = match kind {
            Kind::Ours => self.ours.clone(),
            Kind::Reference => a.reference.clone().context("no reference binary")?,
        };
        let load_average_before = sys::load_average();
        let pg0 = self.cluster.cpu();
        let started = Instant::now();
        let target = ingester::Target {
            db: &db,
            db_url: &db_url,
            pulsar_url: &self.pulsar_url,
            topic: &topic.full(),
            subscription,
            metrics_port: a.metrics_port,
            dir: &dir,
        };
        let mut child = ingester::start(kind, &binary, &target).await?;
        let mut drain = Drain::default();
        let total = self.stream.events;
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            child.check_alive()?;
            let marks = self.admin.mark_deletes(&topic.full(), a.partitions, subscription).await?;
            let (done, oldest) = progress.at(&marks);
            let t = started.elapsed();
            // Lag: how long the oldest uncommitted message has waited since it was published.
            let lag = oldest.map_or(0.0, |o| (publish_started.elapsed().saturating_sub(o)).as_secs_f64());
            drain.series.push((t.as_secs_f64(), done as f64, lag));
            if done >= total && oldest.is_none() {
                break;
            }
            if t > Duration::from_secs(a.timeout) {
                bail!("drain not finished after {} s ({done} of {total} events committed)", a.timeout);
            }
        }
        let secs = started.elapsed().as_secs_f64();
        let pg1 = self.cluster.cpu();
        let (cpu, rss) = child.usage();
        let (rows, states) = pg::counts(&pool).await?;
        let final_rows: i64 = rows.values().sum();
        drain.seconds = secs;
        drain.events_per_second = total as f64 / secs;
        drain.messages_per_second = self.stream.messages.len() as f64 / secs;
        drain.rows_per_second = final_rows as f64 / secs;
        drain.job_states_as_expected =
            self.stream.final_states.iter().all(|(s, n)| states.get(s).copied().unwrap_or(0) == *n as i64)
                && states.values().sum::<i64>() == self.stream.jobs as i64;
        drain.rows = rows;
        drain.job_states = states;
        drain.postgres_cpu_seconds = pg0.zip(pg1).map(|(a, b)| b - a);
        drain.postgres_cpu_us_per_event = drain.postgres_cpu_seconds.map(|c| c * 1e6 / total as f64);
        drain.ingester_cpu_seconds = cpu;
        drain.ingester_cpu_us_per_event = cpu.map(|c| c * 1e6 / total as f64);
        drain.peak_rss_mib = rss;
        if self.cluster.statements {
            let statements = self.cluster.statements(&name).await?;
            drain.statements_ms = Some(statements.iter().map(|s| s.0).sum());
            drain.statements_top = statements
                .into_iter()
                .take(15)
                .map(|(ms, calls, q)| {
                    (ms, calls, q.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(160).collect())
                })
                .collect();
        }
        if kind == Kind::Ours && self.copy.is_none() {
            let cluster = &self.cluster;
            self.copy = Some(pg::copy_baseline(&pool, || cluster.cpu()).await?);
        }

        let steady = match steady_rate.or((kind == Kind::Ours).then_some(drain.events_per_second / 2.0)) {
            Some(rate) if a.steady > 0 => Some(self.steady(&mut publisher, &pool, &child, rate, k).await?),
            _ => None,
        };
        let load_average_after = sys::load_average();
        child.stop().await?;
        drop(publisher);
        pool.close().await;
        if !a.keep {
            self.cluster.drop(&name).await?;
            self.admin.delete_partitioned(&topic.full()).await?;
        }
        Ok(Run { ingester: kind, index: k, load_average_before, load_average_after, drain, steady })
    }

    /// Publishes a fresh stream of the profile at `rate` events/s for `--steady` seconds to the caught-up
    /// ingester and times publish → visible for a sample of its messages.
    async fn steady(
        &self,
        publisher: &mut Publisher,
        pool: &sqlx::PgPool,
        child: &ingester::Running,
        rate: f64,
        k: usize,
    ) -> Result<Steady> {
        let seconds = self.args.steady as f64;
        // New ids (another seed), later event time; the same stream for ours and the reference in a pair.
        let spec = Spec {
            profile: self.args.profile,
            size: Size::Events((rate * seconds) as usize),
            seed: self.args.seed.wrapping_add(1000 + k as u64),
            start: DEFAULT_START + 30 * 86_400,
        };
        let stream = generate(&spec);
        // At most ~100 probes per second.
        let probing = stream.messages.iter().filter(|m| m.probe.is_some()).count();
        let every = (probing as f64 / seconds / 100.0).ceil().max(1.0) as usize;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
        let pg0 = self.cluster.cpu();
        let (cpu0, _) = child.usage();
        let phase = Instant::now();
        let messages = stream.messages.clone();
        let poller = {
            let pool = pool.clone();
            tokio::spawn(async move {
                // (job id, wants terminal) → sent
                let mut pending: HashMap<(String, bool), Instant> = HashMap::new();
                let mut seen: Vec<(f64, f64)> = Vec::new();
                let mut probes = 0usize;
                let mut closed = false;
                let mut nth = 0usize;
                let mut deadline: Option<Instant> = None;
                loop {
                    loop {
                        match rx.try_recv() {
                            Ok((i, at)) => {
                                if let Some(p) = &messages[i].probe {
                                    nth += 1;
                                    if nth.is_multiple_of(every) {
                                        probes += 1;
                                        pending.insert((p.job_id.clone(), p.kind == ProbeKind::Terminal), at);
                                    }
                                }
                            }
                            Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                            Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                                closed = true;
                                break;
                            }
                        }
                    }
                    let ids: Vec<&str> = pending.keys().map(|(id, _)| id.as_str()).collect();
                    let states = pg::states(&pool, &ids).await?;
                    let now = Instant::now();
                    for (id, state) in states {
                        let keys: Vec<bool> = if matches!(state, 4..=7 | 9) { vec![false, true] } else { vec![false] };
                        for terminal in keys {
                            if let Some(at) = pending.remove(&(id.clone(), terminal)) {
                                seen.push(((at - phase).as_secs_f64(), (now - at).as_secs_f64()));
                            }
                        }
                    }
                    if closed {
                        let d = *deadline.get_or_insert(now + Duration::from_secs(60));
                        if pending.is_empty() || now > d {
                            break;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                anyhow::Ok((seen, probes, pending.len()))
            })
        };
        let report = publisher
            .publish(&stream.messages, &Options { rate: Some(rate), progress: false, notify: Some(tx) })
            .await?;
        let (mut seen, probes, not_seen) = poller.await.context("the probe poller panicked")??;
        let pg1 = self.cluster.cpu();
        let (cpu1, _) = child.usage();
        let mut latencies: Vec<f64> = seen.iter().map(|s| s.1).collect();
        latencies.sort_by(f64::total_cmp);
        let q =
            |p: f64| (!latencies.is_empty()).then(|| latencies[((latencies.len() - 1) as f64 * p).round() as usize]);
        seen.sort_by(|a, b| a.0.total_cmp(&b.0));
        Ok(Steady {
            target_events_per_second: rate,
            published_events_per_second: report.events as f64 / report.elapsed.as_secs_f64(),
            seconds: phase.elapsed().as_secs_f64(),
            events: report.events,
            probes,
            probes_not_seen: not_seen,
            p50_seconds: q(0.5),
            p99_seconds: q(0.99),
            postgres_cpu_seconds: pg0.zip(pg1).map(|(a, b)| b - a),
            ingester_cpu_seconds: cpu0.zip(cpu1).map(|(a, b)| b - a),
            series: seen,
        })
    }
}

/// The directory of a path (for the chart's data files).
pub(crate) fn data_dir(out: &Path) -> PathBuf {
    out.join("data")
}
