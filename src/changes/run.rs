//! All of a batch's updates to one existing run, folded ([`RunDelta`]), with the precedence rules of
//! `docs/precedence.md` (run rules).

use std::collections::BTreeMap;

use super::run_state;
use crate::message::{EventId, Ts};

/// How a run ended: the first ending event of the batch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunEnd {
    pub state: i16,
    pub at: Option<Ts>,
    pub exit_code: Option<i32>,
    pub error: Option<Vec<u8>>,
    pub node: Option<String>,
    /// JSON object text for `scheduler_termination_reason`.
    pub termination_reason: Option<String>,
    pub category: Option<String>,
    pub subcategory: Option<String>,
    /// `Some("ingester")` when the category was derived by the ingester (`crate::analytics::classify`).
    pub category_source: Option<&'static str>,
}

/// All of a batch's updates to one existing run, folded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunDelta {
    pub job_id: String,
    /// Highest active state seen (PENDING or RUNNING).
    pub active_state: Option<i16>,
    pub pending: Option<Ts>,
    pub started: Option<Ts>,
    /// Node reported while running (applied unless an ending event names one).
    pub running_node: Option<String>,
    pub end: Option<RunEnd>,
    /// Categories of terminal errors that did not end the run (fill empty columns only).
    pub late_category: Option<String>,
    pub late_subcategory: Option<String>,
    /// Message of the first non-terminal error (fills an empty `error` of a run that has not ended).
    pub nonterminal_error: Option<Vec<u8>>,
    /// Debug text embedded in an error (fills an empty `debug`).
    pub error_debug: Option<Vec<u8>>,
    /// Debug document from `JobRunTerminatedDebugInfo` (wins).
    pub info_debug: Option<Vec<u8>>,
    pub ingress: BTreeMap<String, String>,
    pub sources: Vec<EventId>,
}

impl RunDelta {
    pub fn active(&mut self, state: i16, at: Ts, node: Option<String>, source: EventId) {
        self.sources.push(source);
        if self.active_state.is_none_or(|s| run_state::active_rank(state) > run_state::active_rank(s)) {
            self.active_state = Some(state);
        }
        let slot = if state == run_state::PENDING { &mut self.pending } else { &mut self.started };
        if slot.is_none_or(|old| at > old) {
            *slot = Some(at);
        }
        if let Some(n) = node
            && (self.end.is_none() || self.running_node.is_none())
        {
            self.running_node = Some(n);
        }
    }

    /// An ending event. The batch's first ending decides the run's end; the categories of a later ending (a
    /// terminal `JobRunErrors` after a cancel, say) are kept to fill empty columns (`late_category`,
    /// `late_subcategory`).
    pub fn end(&mut self, end: RunEnd, error_debug: Option<Vec<u8>>, source: EventId) {
        self.sources.push(source);
        if self.error_debug.is_none() {
            self.error_debug = error_debug;
        }
        match &self.end {
            None => self.end = Some(end),
            // A derived category never fills a later ending's gap: only what an event carried does.
            Some(_) if end.category_source.is_some() => {}
            Some(_) => {
                if self.late_category.is_none() {
                    self.late_category = end.category;
                }
                if self.late_subcategory.is_none() {
                    self.late_subcategory = end.subcategory;
                }
            }
        }
    }

    pub fn nonterminal_error(&mut self, error: Option<Vec<u8>>, error_debug: Option<Vec<u8>>, source: EventId) {
        self.sources.push(source);
        if self.end.is_none() && self.nonterminal_error.is_none() {
            self.nonterminal_error = error;
        }
        if self.error_debug.is_none() {
            self.error_debug = error_debug;
        }
    }

    pub fn debug_info(&mut self, debug: Vec<u8>, source: EventId) {
        self.sources.push(source);
        self.info_debug = Some(debug);
    }

    pub fn ingress(&mut self, addresses: BTreeMap<String, String>, source: EventId) {
        self.sources.push(source);
        self.ingress.extend(addresses);
    }
}
