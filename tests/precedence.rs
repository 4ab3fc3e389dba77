//! Property: the final `job` and `job_run` rows do not depend on how the events arrive (docs/precedence.md).
//!
//! Generates valid job lifecycles (success, failure with a category, cancellation while queued / leased / running,
//! preemption, preemption after success, rejection, lease return + requeue + new run, max runs exceeded, still
//! running), then delivers their events the way Armada can: the server's submit first, then the scheduler's and the
//! executors' events each in their own order but interleaved arbitrarily with each other and with other jobs,
//! segments redelivered later (duplicates, replays of older parts), grouped into messages and split across batches
//! of random sizes. The rows must equal those of the in-order delivery, and nothing may be left parked or
//! quarantined. Runs against the real Postgres (`DATABASE_URL`), through `apply`.

mod support;

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lookout_ingester::apply::apply_files;
use lookout_ingester::convert::Converter;
use lookout_ingester::proto::armadaevents::{Event, EventKind, EventSequence};
use lookout_ingester::writer::Writer;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::postgres::PgConnectOptions;
use support::events::*;
use support::rows;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Server,
    Scheduler,
    Executor,
}

#[derive(Debug, Clone, Copy)]
enum Lifecycle {
    Success,
    FailWithCategory,
    CancelQueued,
    CancelLeased,
    CancelRunning,
    Preempted,
    PreemptedAfterSuccess,
    Rejected,
    /// Lease returned and requeued this many times, then a run that succeeds.
    Retry(u8),
    MaxRunsExceeded(u8),
    StillRunning,
}

fn lifecycle() -> impl Strategy<Value = Lifecycle> {
    prop_oneof![
        Just(Lifecycle::Success),
        Just(Lifecycle::FailWithCategory),
        Just(Lifecycle::CancelQueued),
        Just(Lifecycle::CancelLeased),
        Just(Lifecycle::CancelRunning),
        Just(Lifecycle::Preempted),
        Just(Lifecycle::PreemptedAfterSuccess),
        Just(Lifecycle::Rejected),
        (1u8..3).prop_map(Lifecycle::Retry),
        (1u8..3).prop_map(Lifecycle::MaxRunsExceeded),
        Just(Lifecycle::StillRunning),
    ]
}

/// One event with the path that publishes it.
#[derive(Clone)]
struct Published {
    path: Path,
    event: Event,
}

/// The canonical (in-order) events of one job.
fn events_of(lc: Lifecycle, job: &str, base: i64) -> Vec<Published> {
    let mut out = Vec::new();
    let mut t = base;
    let mut push = |path: Path, kind: EventKind| {
        t += 1;
        out.push(Published { path, event: event(t, kind) });
    };
    use Path::*;
    push(
        Server,
        submit_job(
            job,
            2,
            Some(pod(&[("cpu", "500m"), ("memory", "64Mi")], Some("p1"))),
            &[("armadaproject.io/k", "v")],
        ),
    );
    let run = |i: u8| format!("{job}-r{i}");
    let start = |push: &mut dyn FnMut(Path, EventKind), r: &str, run_it: bool| {
        // The scheduler binds the pod to the node it leases, so the lease and the running pod name the same node
        // (docs/precedence.md, run rule 5).
        push(Scheduler, leased(job, r, "cluster", "node-b", "pool"));
        push(Executor, assigned(job, r));
        if run_it {
            push(Executor, running(job, r, Some("node-b")));
            push(Executor, ingress(job, r, &[(8080, "10.0.0.1")]));
        }
    };
    match lc {
        Lifecycle::Success => {
            push(Scheduler, reprioritised(job, 7));
            start(&mut push, &run(1), true);
            push(Executor, run_succeeded(job, &run(1)));
            push(Executor, debug_info(job, &run(1), "{\"schemaVersion\":1}"));
            push(Scheduler, job_succeeded(job));
        }
        Lifecycle::FailWithCategory => {
            start(&mut push, &run(1), true);
            push(
                Executor,
                run_errors(job, &run(1), vec![error(true, pod_error("oom", "node-c", &[137], "d"), "oom", "limit")]),
            );
            push(Executor, debug_info(job, &run(1), "{\"schemaVersion\":1,\"x\":2}"));
            push(Scheduler, job_errors(job, vec![error(true, pod_error("oom", "node-c", &[137], ""), "oom", "limit")]));
        }
        Lifecycle::CancelQueued => push(Scheduler, cancelled_job(job, "not needed", "bob")),
        Lifecycle::CancelLeased => {
            push(Scheduler, leased(job, &run(1), "cluster", "", "pool"));
            push(Scheduler, run_cancelled(job, &run(1), "", "bob"));
            push(Scheduler, cancelled_job(job, "", "bob"));
        }
        Lifecycle::CancelRunning => {
            start(&mut push, &run(1), true);
            push(Scheduler, run_cancelled(job, &run(1), "stop", "bob"));
            push(Scheduler, cancelled_job(job, "stop", ""));
        }
        Lifecycle::Preempted => {
            start(&mut push, &run(1), true);
            push(Scheduler, run_preempted(job, &run(1), "higher priority", "other", ""));
            push(Scheduler, run_errors(job, &run(1), vec![error(true, preempted_error("higher priority"), "", "")]));
            push(Scheduler, job_errors(job, vec![error(true, preempted_error("higher priority"), "preempted", "")]));
        }
        Lifecycle::PreemptedAfterSuccess => {
            start(&mut push, &run(1), true);
            push(Executor, run_succeeded(job, &run(1)));
            push(Scheduler, job_succeeded(job));
            push(Scheduler, job_errors(job, vec![error(true, preempted_error("late"), "", "")]));
        }
        Lifecycle::Rejected => {
            push(Scheduler, job_errors(job, vec![error(true, rejected("no such queue"), "internal", "job-rejected")]));
        }
        Lifecycle::Retry(n) => {
            for i in 1..=n {
                start(&mut push, &run(i), i % 2 == 0);
                push(Executor, run_errors(job, &run(i), vec![error(true, lease_returned("returned", ""), "", "")]));
                push(Scheduler, requeued(job));
            }
            start(&mut push, &run(n + 1), true);
            push(Executor, run_succeeded(job, &run(n + 1)));
            push(Scheduler, job_succeeded(job));
        }
        Lifecycle::MaxRunsExceeded(n) => {
            for i in 1..=n {
                start(&mut push, &run(i), false);
                push(Executor, run_errors(job, &run(i), vec![error(true, lease_returned("returned", ""), "", "")]));
                if i < n {
                    push(Scheduler, requeued(job));
                }
            }
            push(Scheduler, job_errors(job, vec![error(true, max_runs("too many"), "internal", "max-runs-exceeded")]));
        }
        Lifecycle::StillRunning => start(&mut push, &run(1), true),
    }
    out
}

/// A delivery Armada could produce: per job, submit first, then the scheduler's and the executor's events merged
/// in any order; jobs interleaved; older segments redelivered later.
fn shuffled(jobs: &[Vec<Published>], rng: &mut StdRng) -> Vec<Published> {
    let per_job: Vec<Vec<Published>> = jobs
        .iter()
        .map(|events| {
            let (mut submit, rest): (Vec<_>, Vec<_>) = events.iter().cloned().partition(|e| e.path == Path::Server);
            let (sched, exec): (Vec<_>, Vec<_>) = rest.into_iter().partition(|e| e.path == Path::Scheduler);
            submit.extend(merge(vec![sched, exec], rng));
            submit
        })
        .collect();
    let mut delivery = merge(per_job, rng);
    let redeliveries = rng.random_range(0..4);
    for _ in 0..redeliveries {
        let start = rng.random_range(0..delivery.len());
        let len = rng.random_range(1..=6).min(delivery.len() - start);
        let segment: Vec<Published> = delivery[start..start + len].to_vec();
        let at = rng.random_range(start + len..=delivery.len());
        delivery.splice(at..at, segment);
    }
    delivery
}

/// Interleaves lists at random, keeping each list's order.
fn merge(mut lists: Vec<Vec<Published>>, rng: &mut StdRng) -> Vec<Published> {
    for l in &mut lists {
        l.reverse();
    }
    let mut out = Vec::new();
    loop {
        let live: Vec<usize> = (0..lists.len()).filter(|&i| !lists[i].is_empty()).collect();
        if live.is_empty() {
            return out;
        }
        let pick = live[rng.random_range(0..live.len())];
        out.push(lists[pick].pop().expect("non-empty"));
    }
}

/// Groups consecutive events of one path into messages of at most `max` events.
fn messages(events: &[Published], rng: &mut StdRng) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut current: Vec<Event> = Vec::new();
    let mut path = None;
    let mut cap = 1;
    for e in events {
        if path != Some(e.path) || current.len() >= cap {
            if !current.is_empty() {
                out.push(sequence(std::mem::take(&mut current)));
            }
            path = Some(e.path);
            cap = rng.random_range(1..=3);
        }
        current.push(e.event.clone());
    }
    if !current.is_empty() {
        out.push(sequence(current));
    }
    out
}

fn sequence(events: Vec<Event>) -> Vec<u8> {
    let mut s = seq("queue-a", "jobset-a").seq;
    s.events = events;
    prost::Message::encode_to_vec(&EventSequence { ..s })
}

/// Rows of the jobs whose id starts with `prefix`, with the prefix removed (so two deliveries compare).
async fn snapshot(
    pool: &sqlx::PgPool,
    prefix: &str,
) -> (Vec<rows::Job>, Vec<rows::Run>, Vec<(String, Option<String>)>) {
    let strip = |s: &str| s.strip_prefix(prefix).map(str::to_string);
    let mut jobs: Vec<rows::Job> =
        rows::jobs(pool).await.into_iter().filter(|j| j.job_id.starts_with(prefix)).collect();
    for j in &mut jobs {
        j.job_id = strip(&j.job_id).unwrap();
        j.latest_run_id = j.latest_run_id.as_deref().and_then(strip);
    }
    let mut runs: Vec<rows::Run> =
        rows::runs(pool).await.into_iter().filter(|r| r.job_id.starts_with(prefix)).collect();
    for r in &mut runs {
        r.run_id = strip(&r.run_id).unwrap();
        r.job_id = strip(&r.job_id).unwrap();
        r.termination_reason =
            r.termination_reason.take().map(|v| serde_json::from_str(&v.to_string().replace(prefix, "")).unwrap());
    }
    let mut errors = Vec::new();
    for j in &jobs {
        errors.push((j.job_id.clone(), rows::job_error(pool, &format!("{prefix}{}", j.job_id)).await));
    }
    (jobs, runs, errors)
}

struct Env {
    rt: tokio::runtime::Runtime,
    db: support::db::TestDb,
    store: Writer,
    dir: tempfile::TempDir,
}

fn env() -> &'static Env {
    static ENV: std::sync::OnceLock<Env> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let (db, store) = rt.block_on(async {
            let db = support::db::TestDb::migrated().await;
            let opts = PgConnectOptions::from_str(&db.url).unwrap();
            let store = Writer::connect(opts, Converter::default(), None, Duration::from_secs(1))
                .await
                .unwrap()
                .with_max_attempts(3);
            (db, store)
        });
        Env { rt, db, store, dir: tempfile::tempdir().unwrap() }
    })
}

static CASE: AtomicU64 = AtomicU64::new(0);

/// Writes messages to a file and applies them in batches of the given sizes (cycled).
async fn deliver(env: &Env, name: &str, msgs: Vec<Vec<u8>>, batch_sizes: &[usize]) {
    let mut start = 0;
    let mut i = 0;
    while start < msgs.len() {
        let take = batch_sizes[i % batch_sizes.len()].max(1).min(msgs.len() - start);
        let path = env.dir.path().join(format!("{name}-{i}.bin"));
        std::fs::write(&path, delimited(&msgs[start..start + take])).unwrap();
        apply_files(&env.store, &[path], usize::MAX).await.expect("apply");
        start += take;
        i += 1;
    }
}

fn prefixed(lcs: &[Lifecycle], prefix: &str) -> Vec<Vec<Published>> {
    lcs.iter().enumerate().map(|(i, lc)| events_of(*lc, &format!("{prefix}j{i}"), T0 + 1000 * i as i64)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, max_shrink_iters: 64, .. ProptestConfig::default() })]

    #[test]
    fn final_rows_do_not_depend_on_arrival_order(
        lcs in prop::collection::vec(lifecycle(), 1..5),
        seed in any::<u64>(),
        batch_sizes in prop::collection::vec(1usize..8, 1..6),
    ) {
        let env = env();
        let case = CASE.fetch_add(1, Ordering::Relaxed);
        let (a, b) = (format!("c{case}a-"), format!("c{case}b-"));
        let mut rng = StdRng::seed_from_u64(seed);

        // In order: every job's canonical events, one message each, one batch.
        let in_order: Vec<Vec<u8>> = prefixed(&lcs, &a).into_iter().flatten().map(|p| sequence(vec![p.event])).collect();
        // As Armada may deliver them.
        let delivery = shuffled(&prefixed(&lcs, &b), &mut rng);
        let msgs = messages(&delivery, &mut rng);

        let (expected, actual, parked, quarantined) = env.rt.block_on(async {
            deliver(env, &a, in_order, &[usize::MAX]).await;
            deliver(env, &b, msgs, &batch_sizes).await;
            let parked = rows::count(&env.db.pool, &format!("SELECT count(*) FROM lookout_ingester.parked_event WHERE job_id LIKE '{b}%'")).await;
            let quarantined = rows::count(&env.db.pool, "SELECT count(*) FROM lookout_ingester.quarantine").await;
            (snapshot(&env.db.pool, &a).await, snapshot(&env.db.pool, &b).await, parked, quarantined)
        });
        prop_assert_eq!(parked, 0, "events left parked");
        prop_assert_eq!(quarantined, 0, "events quarantined");
        prop_assert_eq!(&expected.0.len(), &lcs.len());
        prop_assert_eq!(expected, actual);
    }
}
