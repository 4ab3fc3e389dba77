//! Load generator: deterministic Armada job-set event streams (one file per workload profile), shared by the
//! `loadgen` and `bench` subcommands, the tests and the store benchmark.
//!
//! A profile turns a seed, a size and a start time into a [`Stream`]: the messages in publish order (each an encoded
//! `EventSequence` with its job set as the partition key) and what the stream should leave in Lookout (the outcome
//! of every job and the final job state it implies). The same inputs give the same bytes.
//!
//! - [`short`]: the sample stream (a job lives ~20 s of event time, one event per message);
//! - [`long`]: realistic lifecycles in event time (queued seconds to minutes, running minutes to hours, thousands of
//!   jobs in flight, submits and leases grouped per job set like Armada's server and scheduler publish them);
//! - [`storm`]: one node pool failing thousands of runs within seconds, on top of a background load.
//!
//! [`publish`] sends a stream to Pulsar; [`cli`] is the `loadgen` subcommand.

pub mod cli;
pub mod events;
pub mod ids;
pub mod long;
pub mod publish;
pub mod short;
pub mod storm;
pub mod topic;

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::proto::armadaevents::EventKind;

/// 2026-01-01T00:00:00Z: the default start of event time, so that a seed alone fixes a stream.
pub const DEFAULT_START: i64 = 1_767_225_600;

/// A workload profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Short,
    Long,
    Storm,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Short => "short",
            Profile::Long => "long",
            Profile::Storm => "storm",
        }
    }
}

/// How big a stream is: a number of jobs, or (at least) a number of events, whole job lives included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    Jobs(usize),
    Events(usize),
}

impl Size {
    /// True once a stream of `jobs` jobs and `events` events is big enough.
    fn reached(self, jobs: usize, events: usize) -> bool {
        match self {
            Size::Jobs(n) => jobs >= n,
            Size::Events(n) => events >= n,
        }
    }
}

/// Everything a stream depends on.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub profile: Profile,
    pub size: Size,
    pub seed: u64,
    /// Event time of the first job, in Unix seconds.
    pub start: i64,
}

/// Generates the stream of `spec`.
pub fn generate(spec: &Spec) -> Stream {
    match spec.profile {
        Profile::Short => short::generate(spec),
        Profile::Long => long::generate(spec),
        Profile::Storm => storm::generate(spec),
    }
}

/// What a probe watches for in the database once its message is published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    /// The job row exists (the message submits it).
    Created,
    /// The job is in a terminal state (the message ends it).
    Terminal,
}

/// A job whose row a message creates or ends: how `bench` sees when a message became visible.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub job_id: String,
    pub kind: ProbeKind,
}

/// One Pulsar message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The partition key: the job set, as Armada's producers key their messages.
    pub key: String,
    /// An encoded `EventSequence`.
    pub payload: Vec<u8>,
    pub events: u32,
    pub probe: Option<Probe>,
}

/// A generated stream and what it should leave in Lookout.
#[derive(Clone, Debug, Default)]
pub struct Stream {
    pub messages: Vec<Message>,
    pub jobs: usize,
    pub events: usize,
    /// Jobs per outcome (the profile's own names, e.g. `cancelled-while-queued`).
    pub outcomes: BTreeMap<&'static str, usize>,
    /// Jobs per final `job.state` code (4 succeeded, 5 failed, 6 cancelled, 7 preempted, 9 rejected).
    pub final_states: BTreeMap<i16, usize>,
    /// Run failures per (failure_category, failure_subcategory).
    pub failure_categories: BTreeMap<(String, String), usize>,
}

impl Stream {
    pub(crate) fn record(&mut self, outcome: &'static str, final_state: i16) {
        self.jobs += 1;
        *self.outcomes.entry(outcome).or_default() += 1;
        *self.final_states.entry(final_state).or_default() += 1;
    }

    pub(crate) fn record_failure(&mut self, category: &str, subcategory: &str) {
        *self.failure_categories.entry((category.to_string(), subcategory.to_string())).or_default() += 1;
    }

    pub fn bytes(&self) -> usize {
        self.messages.iter().map(|m| m.payload.len()).sum()
    }

    /// The payloads in publish order.
    pub fn payloads(&self) -> Vec<Vec<u8>> {
        self.messages.iter().map(|m| m.payload.clone()).collect()
    }
}

/// Who publishes an event in Armada: the server (submits, reprioritisations), the scheduler (leases, job-level
/// outcomes, requeues, cancellations, preemptions) or an executor (run progress and run ends).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Source {
    Server,
    Scheduler,
    Executor,
}

/// A job set: its queue, name and owner.
#[derive(Clone, Debug)]
pub(crate) struct JobSet {
    pub queue: String,
    pub name: String,
    pub owner: String,
}

struct Entry {
    ms: i64,
    seq: u64,
    job: u32,
    jobset: u32,
    source: Source,
    kind: EventKind,
}

/// Events in event time, turned into messages the way Armada's publishers group them: one message per job set and
/// publisher for events that fall within `window_ms` of the group's first, at most `max_events` per message, and
/// never an event of a job ahead of an earlier event of the same job.
pub(crate) struct Timeline {
    entries: Vec<Entry>,
    pub jobsets: Vec<JobSet>,
    next_seq: u64,
}

impl Timeline {
    pub fn new(jobsets: Vec<JobSet>) -> Self {
        Timeline { entries: Vec::new(), jobsets, next_seq: 0 }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Adds an event of job number `job` (any id unique within the stream) in job set `jobset`.
    pub fn push(&mut self, ms: i64, job: u32, jobset: u32, source: Source, kind: EventKind) {
        self.entries.push(Entry { ms, seq: self.next_seq, job, jobset, source, kind });
        self.next_seq += 1;
    }

    /// The messages, in publish order.
    pub fn into_messages(mut self, window_ms: i64, max_events: usize) -> Vec<Message> {
        self.entries.sort_by_key(|e| (e.ms, e.seq));
        struct Open {
            first_ms: i64,
            generation: u64,
            entries: Vec<Entry>,
        }
        let mut out = Vec::new();
        let mut open: HashMap<(u32, Source), Open> = HashMap::new();
        // Groups in the order they were opened, with their generation (a stale entry is skipped).
        let mut order: VecDeque<((u32, Source), u64)> = VecDeque::new();
        let mut job_group: HashMap<u32, ((u32, Source), u64)> = HashMap::new();
        let mut generation = 0u64;
        let jobsets = std::mem::take(&mut self.jobsets);
        let flush = |open: &mut HashMap<(u32, Source), Open>, key: (u32, Source), out: &mut Vec<Message>| {
            if let Some(g) = open.remove(&key) {
                out.push(encode(&jobsets[key.0 as usize], g.entries));
            }
        };
        for e in self.entries {
            while let Some(&(key, generation)) = order.front() {
                match open.get(&key) {
                    Some(g) if g.generation == generation => {
                        if g.first_ms + window_ms > e.ms {
                            break;
                        }
                        flush(&mut open, key, &mut out);
                    }
                    _ => {}
                }
                order.pop_front();
            }
            let key = (e.jobset, e.source);
            if let Some(&(previous, generation)) = job_group.get(&e.job)
                && previous != key
                && open.get(&previous).is_some_and(|g| g.generation == generation)
            {
                flush(&mut open, previous, &mut out);
            }
            if open.get(&key).is_some_and(|g| g.entries.len() >= max_events) {
                flush(&mut open, key, &mut out);
            }
            let group = open.entry(key).or_insert_with(|| {
                generation += 1;
                order.push_back((key, generation));
                Open { first_ms: e.ms, generation, entries: Vec::new() }
            });
            job_group.insert(e.job, (key, group.generation));
            group.entries.push(e);
        }
        while let Some((key, generation)) = order.pop_front() {
            if open.get(&key).is_some_and(|g| g.generation == generation) {
                flush(&mut open, key, &mut out);
            }
        }
        out
    }
}

fn encode(jobset: &JobSet, entries: Vec<Entry>) -> Message {
    let mut s = events::seq(&jobset.queue, &jobset.name).user(&jobset.owner);
    let n = entries.len() as u32;
    for e in entries {
        s = s.at_ms(e.ms, e.kind);
    }
    let probe = probe_of(s.seq.events.iter().filter_map(|e| e.event.as_ref()));
    Message { key: jobset.name.clone(), payload: s.encode(), events: n, probe }
}

/// The first job a message submits, else the first it ends.
pub(crate) fn probe_of<'a>(kinds: impl Iterator<Item = &'a EventKind> + Clone) -> Option<Probe> {
    let id = |b: &crate::proto::Bytes| String::from_utf8_lossy(b).into_owned();
    kinds
        .clone()
        .find_map(|k| match k {
            EventKind::SubmitJob(s) => Some(Probe { job_id: id(&s.job_id), kind: ProbeKind::Created }),
            _ => None,
        })
        .or_else(|| {
            kinds
                .into_iter()
                .find_map(|k| match k {
                    EventKind::JobSucceeded(e) => Some(id(&e.job_id)),
                    EventKind::CancelledJob(e) => Some(id(&e.job_id)),
                    EventKind::JobErrors(e) if e.errors.iter().any(|x| x.terminal) => Some(id(&e.job_id)),
                    _ => None,
                })
                .map(|job_id| Probe { job_id, kind: ProbeKind::Terminal })
        })
}

/// Picks an index with probability proportional to its weight.
pub(crate) fn pick<R: rand::Rng>(rng: &mut R, weights: &[u32]) -> usize {
    let total: u32 = weights.iter().sum();
    let mut x = rng.random_range(0..total);
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

/// A duration drawn log-uniformly between `lo` and `hi` milliseconds: as many jobs last seconds as minutes.
pub(crate) fn log_uniform<R: rand::Rng>(rng: &mut R, lo: f64, hi: f64) -> i64 {
    (lo.ln() + rng.random::<f64>() * (hi.ln() - lo.ln())).exp() as i64
}
