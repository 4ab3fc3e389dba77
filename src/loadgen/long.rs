//! Profile `long`: realistic job lifecycles in event time.
//!
//! Jobs arrive in submission requests (1–200 jobs of one job set, a request every ~9 s of event time on average),
//! over five queues and sixty job sets. A job queues for 2 s to 10 min and runs for 2 min to 3 h (both
//! log-uniform), so about 10 000 jobs are in flight once the stream has ramped up, and a job's events lie far apart
//! in the stream: in a 10 000-event batch a job's submit, lease, start and end usually fall in different batches.
//!
//! Outcomes (per mille): succeeded 560; failed 140, spread over eight failure categories/subcategories; cancelled
//! while queued 40; cancelled while running 50; preempted 70; rejected 30; lease returned, requeued and run again to
//! success 110. Independently, 8 % of the jobs that get past validation are reprioritised while queued.
//!
//! Events are published as Armada's services do: the server publishes submits (one message per request) and
//! reprioritisations, the scheduler leases, job outcomes, requeues, cancellations and preemptions, and executors
//! a run's progress and end; events of one job set and publisher within one second share a message.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::events::*;
use super::{JobSet, Source, Spec, Stream, Timeline, ids, log_uniform, pick};
use crate::proto::armadaevents::EventKind;

const QUEUES: &[(&str, u32, &str)] = &[
    ("research", 30, "alice"),
    ("batch", 25, "bob"),
    ("gpu-train", 15, "carol"),
    ("analytics", 20, "dave"),
    ("prod-inference", 10, "erin"),
];
const JOBSETS_PER_QUEUE: usize = 12;
const POOLS: &[&str] = &["cpu", "gpu", "highmem"];
const CLUSTERS: &[&str] = &["cluster-a", "cluster-b", "cluster-c", "cluster-d"];
/// Mean time between two submission requests, in ms of event time.
const MEAN_REQUEST_GAP_MS: f64 = 9_000.0;

const OUTCOMES: &[(&str, u32)] = &[
    ("succeeded", 560),
    ("failed", 140),
    ("cancelled-while-queued", 40),
    ("cancelled-while-running", 50),
    ("preempted", 70),
    ("rejected", 30),
    ("lease-returned-then-rerun", 110),
];

/// (failure_category, failure_subcategory, weight, exit code, message)
const FAILURES: &[(&str, &str, u32, i32, &str)] = &[
    ("oom", "container-limit", 30, 137, "container main was OOMKilled"),
    ("user-error", "exit-code", 25, 1, "container main exited with code 1"),
    ("user-error", "segfault", 8, 139, "container main was killed by SIGSEGV"),
    ("infrastructure", "node-failure", 10, 255, "node became unreachable"),
    ("infrastructure", "image-pull", 10, 0, "ErrImagePull: image not found"),
    ("timeout", "active-deadline", 8, 143, "active deadline exceeded"),
    ("gpu", "xid-error", 5, 255, "GPU fell off the bus (Xid 79)"),
    ("", "", 4, 2, "container main exited with code 2"),
];

/// The published outcome mix, for `loadgen --help` and the tests: (outcome, per mille).
pub fn outcome_weights() -> &'static [(&'static str, u32)] {
    OUTCOMES
}

/// A stream being written (also used by the `storm` profile).
pub(super) struct Gen {
    pub rng: StdRng,
    pub timeline: Timeline,
    pub stream: Stream,
}

/// One job's context while its life is written.
pub(super) struct Job {
    pub n: u32,
    pub jobset: u32,
    pub id: String,
    pub owner: String,
}

/// Five queues of twelve job sets each.
pub(super) fn jobsets() -> Vec<JobSet> {
    QUEUES
        .iter()
        .flat_map(|(queue, _, owner)| {
            (0..JOBSETS_PER_QUEUE).map(move |k| JobSet {
                queue: queue.to_string(),
                name: format!("{queue}-{k:02}"),
                owner: owner.to_string(),
            })
        })
        .collect()
}

impl Gen {
    pub fn new(seed: u64) -> Self {
        Gen { rng: StdRng::seed_from_u64(seed), timeline: Timeline::new(jobsets()), stream: Stream::default() }
    }

    /// A new job, number `n`, in job set `jobset`, submitted at `t`.
    pub fn job(&mut self, n: u32, jobset: u32, t: i64) -> Job {
        let owner = self.timeline.jobsets[jobset as usize].owner.clone();
        Job { n, jobset, id: ids::job_id(&mut self.rng, t), owner }
    }

    /// Ends the generation: the stream with its messages.
    pub fn finish(mut self) -> Stream {
        self.stream.events = self.timeline.len();
        self.stream.messages = self.timeline.into_messages(1_000, 200);
        self.stream
    }

    pub fn push(&mut self, ms: i64, job: &Job, source: Source, kind: EventKind) {
        self.timeline.push(ms, job.n, job.jobset, source, kind);
    }

    pub fn between(&mut self, lo_ms: i64, hi_ms: i64) -> i64 {
        self.rng.random_range(lo_ms..=hi_ms)
    }

    /// Leases (on `pool`, else a random one), assigns and starts a run at `t`; returns (run id, node, time it
    /// started running).
    pub fn start_run(&mut self, job: &Job, t: i64, pool: Option<&str>) -> (String, String, i64) {
        let run = ids::run_id(&mut self.rng);
        let pool = pool.unwrap_or_else(|| POOLS[self.rng.random_range(0..POOLS.len())]);
        let node = format!("{pool}-node-{:03}", self.rng.random_range(0..200));
        let cluster = CLUSTERS[self.rng.random_range(0..CLUSTERS.len())];
        self.push(t, job, Source::Scheduler, leased(&job.id, &run, cluster, &node, pool));
        let t_assigned = t + self.between(500, 5_000);
        self.push(t_assigned, job, Source::Executor, assigned(&job.id, &run));
        let t_running = t_assigned + self.between(2_000, 90_000);
        self.push(t_running, job, Source::Executor, running(&job.id, &run, Some(&node)));
        (run, node, t_running)
    }

    /// The run ends well after running `min_ms` to `max_ms` (log-uniform), then the job succeeds.
    pub fn succeed(&mut self, job: &Job, run: &str, t_running: i64, min_ms: f64, max_ms: f64) {
        let t_end = t_running + log_uniform(&mut self.rng, min_ms, max_ms);
        self.push(t_end, job, Source::Executor, run_succeeded(&job.id, run));
        let t = t_end + self.between(200, 3_000);
        self.push(t, job, Source::Scheduler, job_succeeded(&job.id));
    }

    /// Submits `job` at `t_submit` with one of a few resource shapes (`spec_index`).
    pub fn submit(&mut self, job: &Job, t_submit: i64, spec_index: usize) {
        let pod_spec = pod(
            &[
                ("cpu", ["500m", "1", "2", "4", "16"][spec_index % 5]),
                ("memory", ["512Mi", "1Gi", "4Gi", "16Gi", "64Gi"][spec_index % 5]),
            ],
            Some(["armada-default", "armada-preemptible"][spec_index % 2]),
        );
        let submit = submit_job(
            &job.id,
            (spec_index % 4) as u32,
            Some(pod_spec),
            &[("armadaproject.io/team", ["ml", "infra", "data"][spec_index % 3]), ("owner-id", &job.owner)],
        );
        self.push(t_submit, job, Source::Server, submit);
    }

    fn life(&mut self, job: &Job, t_submit: i64, spec_index: usize) {
        let outcome = pick(&mut self.rng, &OUTCOMES.iter().map(|o| o.1).collect::<Vec<_>>());
        let (name, _) = OUTCOMES[outcome];
        let queued = log_uniform(&mut self.rng, 2_000.0, 600_000.0);
        self.submit(job, t_submit, spec_index);
        if name == "rejected" {
            let t = t_submit + self.between(1_000, 5_000);
            let reason = rejected("requested resources exceed the queue's limits");
            self.push(
                t,
                job,
                Source::Scheduler,
                job_errors(&job.id, vec![error(true, reason, "internal", "job-rejected")]),
            );
            self.stream.record(name, 9);
            return;
        }
        if self.rng.random_bool(0.08) {
            let t = t_submit + 1 + (queued - 2) * self.rng.random_range(0..100) / 100;
            let priority = self.rng.random_range(0..10);
            self.push(t, job, Source::Server, reprioritised(&job.id, priority));
        }
        let t_lease = t_submit + queued;
        match name {
            "cancelled-while-queued" => {
                self.push(t_lease, job, Source::Scheduler, cancelled_job(&job.id, "no longer needed", &job.owner));
                self.stream.record(name, 6);
            }
            "succeeded" => {
                let (run, _, t_running) = self.start_run(job, t_lease, None);
                self.succeed(job, &run, t_running, 120_000.0, 10_800_000.0);
                self.stream.record(name, 4);
            }
            "failed" => {
                let (run, node, t_running) = self.start_run(job, t_lease, None);
                let f = FAILURES[pick(&mut self.rng, &FAILURES.iter().map(|f| f.2).collect::<Vec<_>>())];
                let (category, subcategory, _, exit_code, message) = f;
                let t_end = t_running + log_uniform(&mut self.rng, 5_000.0, 7_200_000.0);
                let codes: &[i32] = if exit_code == 0 { &[] } else { &[exit_code] };
                let e = error(true, pod_error(message, &node, codes, "pod events: see debug"), category, subcategory);
                self.push(t_end, job, Source::Executor, run_errors(&job.id, &run, vec![e.clone()]));
                if self.rng.random_bool(0.3) {
                    let debug = format!("kubectl describe pod: {message}; last state terminated");
                    self.push(t_end + 1, job, Source::Executor, debug_info(&job.id, &run, &debug));
                }
                let t = t_end + self.between(200, 3_000);
                self.push(t, job, Source::Scheduler, job_errors(&job.id, vec![e]));
                self.stream.record(name, 5);
                self.stream.record_failure(category, subcategory);
            }
            "cancelled-while-running" => {
                let (run, _, t_running) = self.start_run(job, t_lease, None);
                let t = t_running + log_uniform(&mut self.rng, 10_000.0, 3_600_000.0);
                self.push(t, job, Source::Scheduler, run_cancelled(&job.id, &run, "no longer needed", &job.owner));
                self.push(t + 1, job, Source::Scheduler, cancelled_job(&job.id, "no longer needed", &job.owner));
                self.stream.record(name, 6);
            }
            "preempted" => {
                let (run, _, t_running) = self.start_run(job, t_lease, None);
                let t = t_running + log_uniform(&mut self.rng, 10_000.0, 3_600_000.0);
                let by = ids::job_id(&mut self.rng, t);
                self.push(
                    t,
                    job,
                    Source::Scheduler,
                    run_preempted(&job.id, &run, "preempted by a higher-priority job", &by, ""),
                );
                let e = error(true, preempted_error("preempted by a higher-priority job"), "", "");
                self.push(t + 1, job, Source::Scheduler, run_errors(&job.id, &run, vec![e.clone()]));
                self.push(t + 2, job, Source::Scheduler, job_errors(&job.id, vec![e]));
                self.stream.record(name, 7);
            }
            _ => {
                // lease returned, requeued, run again to success
                let run = ids::run_id(&mut self.rng);
                let pool = POOLS[self.rng.random_range(0..POOLS.len())];
                let node = format!("{pool}-node-{:03}", self.rng.random_range(0..200));
                self.push(t_lease, job, Source::Scheduler, leased(&job.id, &run, "cluster-a", &node, pool));
                let t = t_lease + self.between(5_000, 120_000);
                let returned = error(true, lease_returned("pod could not be scheduled on the node", ""), "", "");
                self.push(t, job, Source::Executor, run_errors(&job.id, &run, vec![returned]));
                let t_requeued = t + self.between(500, 2_000);
                self.push(t_requeued, job, Source::Scheduler, requeued(&job.id));
                let t_lease2 = t_requeued + log_uniform(&mut self.rng, 2_000.0, 300_000.0);
                let (run2, _, t_running) = self.start_run(job, t_lease2, None);
                self.succeed(job, &run2, t_running, 120_000.0, 10_800_000.0);
                self.stream.record(name, 4);
            }
        }
    }
}

pub fn generate(spec: &Spec) -> Stream {
    let mut g = Gen::new(spec.seed);
    let queue_weights: Vec<u32> = QUEUES.iter().map(|q| q.1).collect();
    let mut t = spec.start * 1000;
    let mut n = 0u32;
    'requests: loop {
        let queue = pick(&mut g.rng, &queue_weights);
        let jobset = (queue * JOBSETS_PER_QUEUE + g.rng.random_range(0..JOBSETS_PER_QUEUE)) as u32;
        let size = log_uniform(&mut g.rng, 1.0, 201.0).max(1);
        let spec_index = g.rng.random_range(0..60usize);
        for _ in 0..size {
            if spec.size.reached(n as usize, g.timeline.len()) {
                break 'requests;
            }
            let job = g.job(n, jobset, t);
            g.life(&job, t, spec_index);
            n += 1;
        }
        // Exponential gaps between requests.
        t += (-(1.0 - g.rng.random::<f64>()).ln() * MEAN_REQUEST_GAP_MS) as i64 + 1;
    }
    g.finish()
}
