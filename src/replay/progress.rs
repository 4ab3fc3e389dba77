//! Progress of a replay: a bar on a terminal (events done, backlog left, events/s, ETA, with `indicatif`), plain
//! log lines every `--log-every` elsewhere, and the final summary.
//!
//! Entries (Pulsar's storage unit: one message, or one producer batch) are what the admin API can count ahead, so
//! the backlog is known exactly in entries; in events it is estimated from the events per entry committed so far.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::message::MessageId;

/// Counts the source keeps up to date (committed work only).
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub messages: u64,
    pub events: u64,
    pub entries: u64,
    /// Entries in every window, when the admin API could tell.
    pub entries_total: Option<u64>,
    pub partitions: usize,
    pub partitions_done: usize,
    /// The highest committed position per partition.
    pub positions: Vec<(String, Option<MessageId>)>,
    /// Every partition reached its end.
    pub complete: bool,
}

/// What the display shows, derived from a [`Tally`] and the time elapsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    pub events: u64,
    pub messages: u64,
    pub entries: u64,
    pub entries_left: Option<u64>,
    /// Events left, estimated from the events per entry so far.
    pub events_left: Option<u64>,
    pub events_per_second: f64,
    pub eta: Option<Duration>,
}

impl Figures {
    pub fn of(t: &Tally, elapsed: Duration) -> Figures {
        let entries_left = t.entries_total.map(|total| total.saturating_sub(t.entries));
        let events_left = match entries_left {
            Some(0) => Some(0),
            Some(left) if t.entries > 0 => Some((left as f64 * t.events as f64 / t.entries as f64).round() as u64),
            _ => None,
        };
        let secs = elapsed.as_secs_f64();
        let events_per_second = if secs > 0.0 { t.events as f64 / secs } else { 0.0 };
        let eta = match events_left {
            Some(0) => Some(Duration::ZERO),
            Some(left) if events_per_second > 0.0 => Some(Duration::from_secs_f64(left as f64 / events_per_second)),
            _ => None,
        };
        Figures {
            events: t.events,
            messages: t.messages,
            entries: t.entries,
            entries_left,
            events_left,
            events_per_second,
            eta,
        }
    }

    /// One line: `12345 events (2345 messages) committed · backlog ~6789 events (120 entries) · 5432 events/s · ETA 2s`.
    pub fn line(&self) -> String {
        let backlog = match (self.events_left, self.entries_left) {
            (Some(events), Some(entries)) => format!("backlog ~{events} events ({entries} entries)"),
            (None, Some(entries)) => format!("backlog {entries} entries"),
            _ => "backlog unknown".into(),
        };
        let eta = self.eta.map_or_else(|| "?".into(), |d| humantime::format_duration(round(d)).to_string());
        format!(
            "{} events ({} messages) committed · {backlog} · {:.0} events/s · ETA {eta}",
            self.events, self.messages, self.events_per_second
        )
    }
}

fn round(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs() + u64::from(d.subsec_millis() >= 500))
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Display {
    /// A bar when stderr is a terminal, else log lines.
    Auto,
    Bar,
    Log,
}

/// Shows progress until stopped.
pub struct Reporter {
    tally: Arc<Mutex<Tally>>,
    started: Instant,
    bar: Option<ProgressBar>,
    every: Duration,
}

impl Reporter {
    pub fn new(tally: Arc<Mutex<Tally>>, display: Display, every: Duration) -> Reporter {
        let bar = match display {
            Display::Bar => true,
            Display::Log => false,
            Display::Auto => std::io::stderr().is_terminal(),
        };
        let bar = bar.then(|| {
            let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(5));
            pb.set_style(
                ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:30}] {percent:>3}% {msg}")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            pb
        });
        Reporter { tally, started: Instant::now(), bar, every: every.max(Duration::from_millis(100)) }
    }

    fn figures(&self) -> (Figures, Tally) {
        let t = self.tally.lock().expect("tally").clone();
        (Figures::of(&t, self.started.elapsed()), t)
    }

    /// Updates the display until `stop` fires.
    pub async fn run(&self, stop: tokio_util::sync::CancellationToken) {
        let period = if self.bar.is_some() { Duration::from_millis(200) } else { self.every };
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            // A last update when stopped, so even a short replay shows one.
            let last = tokio::select! {
                _ = stop.cancelled() => true,
                _ = tick.tick() => false,
            };
            let (f, t) = self.figures();
            match &self.bar {
                Some(pb) => {
                    if let Some(total) = t.entries_total {
                        pb.set_length(total);
                    }
                    pb.set_position(t.entries);
                    pb.set_message(f.line());
                }
                None => tracing::info!(
                    events = f.events,
                    messages = f.messages,
                    entries = f.entries,
                    entries_left = f.entries_left,
                    events_left = f.events_left,
                    events_per_second = f.events_per_second.round() as u64,
                    eta_seconds = f.eta.map(|d| d.as_secs()),
                    partitions_done = t.partitions_done,
                    partitions = t.partitions,
                    "replay: {}",
                    f.line()
                ),
            }
            if last {
                return;
            }
        }
    }

    /// Clears the bar and returns the final summary.
    pub fn finish(&self) -> String {
        if let Some(pb) = &self.bar {
            pb.finish_and_clear();
        }
        let (f, t) = self.figures();
        let elapsed = self.started.elapsed();
        let mut s = format!(
            "replay {}: {} events in {} messages ({} entries) from {} partition(s) in {} ({:.0} events/s)\n",
            if t.complete { "complete" } else { "stopped before the end" },
            f.events,
            f.messages,
            f.entries,
            t.partitions,
            humantime::format_duration(Duration::from_millis(elapsed.as_millis() as u64)),
            f.events_per_second,
        );
        for (partition, position) in &t.positions {
            match position {
                Some(id) => s.push_str(&format!("  {partition}: committed up to {id}\n")),
                None => s.push_str(&format!("  {partition}: nothing committed\n")),
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_and_eta_are_estimated_from_committed_entries() {
        let t = Tally { messages: 200, events: 400, entries: 100, entries_total: Some(300), ..Default::default() };
        let f = Figures::of(&t, Duration::from_secs(4));
        assert_eq!(f.entries_left, Some(200));
        assert_eq!(f.events_left, Some(800));
        assert_eq!(f.events_per_second, 100.0);
        assert_eq!(f.eta, Some(Duration::from_secs(8)));
        assert_eq!(
            f.line(),
            "400 events (200 messages) committed · backlog ~800 events (200 entries) · 100 events/s · ETA 8s"
        );
    }

    #[test]
    fn unknown_figures_say_so() {
        let f = Figures::of(&Tally::default(), Duration::ZERO);
        assert_eq!(f.events_left, None);
        assert_eq!(f.eta, None);
        assert!(f.line().contains("backlog unknown") && f.line().contains("ETA ?"), "{}", f.line());
        let start = Tally { entries_total: Some(50), ..Default::default() };
        let f = Figures::of(&start, Duration::from_secs(1));
        assert_eq!((f.entries_left, f.events_left, f.eta), (Some(50), None, None));
        let done = Tally { events: 9, entries: 5, entries_total: Some(5), ..Default::default() };
        assert_eq!(Figures::of(&done, Duration::from_secs(1)).eta, Some(Duration::ZERO));
    }
}
