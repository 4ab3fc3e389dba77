//! Lookout's state codes (docs/compatibility.md §4) as typed enums: the one definition that Rust code, the SQL
//! statements (checked by the tests of `store::sql_states`) and the tests use.

/// `job.state` (docs/compatibility.md §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(i16)]
pub enum JobState {
    Queued = 1,
    Pending = 2,
    Running = 3,
    Succeeded = 4,
    Failed = 5,
    Cancelled = 6,
    Preempted = 7,
    Leased = 8,
    Rejected = 9,
}

impl JobState {
    pub const ALL: [JobState; 9] = [
        JobState::Queued,
        JobState::Pending,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
        JobState::Preempted,
        JobState::Leased,
        JobState::Rejected,
    ];
    /// States a job can still leave by progress (Lookout's "active").
    pub const ACTIVE: [JobState; 4] = [JobState::Queued, JobState::Pending, JobState::Running, JobState::Leased];
    /// States that absorb later updates (except PREEMPTED over the [`JobState::PREEMPTIBLE`] ones).
    pub const TERMINAL: [JobState; 5] =
        [JobState::Succeeded, JobState::Failed, JobState::Cancelled, JobState::Preempted, JobState::Rejected];
    /// Terminal states a preemption still replaces.
    pub const PREEMPTIBLE: [JobState; 3] = [JobState::Succeeded, JobState::Failed, JobState::Cancelled];
    /// Active states of a job that has a run (the zombie gauge's "still running").
    pub const WITH_RUN: [JobState; 3] = [JobState::Pending, JobState::Running, JobState::Leased];

    /// The column value.
    pub const fn code(self) -> i16 {
        self as i16
    }

    pub fn from_code(code: i16) -> Option<JobState> {
        JobState::ALL.into_iter().find(|s| s.code() == code)
    }

    pub fn is_terminal(self) -> bool {
        JobState::TERMINAL.contains(&self)
    }
}

/// `job_run.job_run_state` (docs/compatibility.md §4.2; 5, 7 and 10 are never written).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(i16)]
pub enum RunState {
    Pending = 1,
    Running = 2,
    Succeeded = 3,
    Failed = 4,
    Preempted = 6,
    LeaseReturned = 8,
    LeaseExpired = 9,
    Leased = 11,
    Cancelled = 12,
}

impl RunState {
    pub const ALL: [RunState; 9] = [
        RunState::Pending,
        RunState::Running,
        RunState::Succeeded,
        RunState::Failed,
        RunState::Preempted,
        RunState::LeaseReturned,
        RunState::LeaseExpired,
        RunState::Leased,
        RunState::Cancelled,
    ];
    /// Active states, in the order a run goes through them (their rank).
    pub const ACTIVE: [RunState; 3] = [RunState::Leased, RunState::Pending, RunState::Running];
    /// States a run never leaves.
    pub const ENDED: [RunState; 6] = [
        RunState::Succeeded,
        RunState::Failed,
        RunState::Preempted,
        RunState::LeaseReturned,
        RunState::LeaseExpired,
        RunState::Cancelled,
    ];

    /// The column value.
    pub const fn code(self) -> i16 {
        self as i16
    }

    pub fn from_code(code: i16) -> Option<RunState> {
        RunState::ALL.into_iter().find(|s| s.code() == code)
    }

    pub fn is_ended(self) -> bool {
        RunState::ENDED.contains(&self)
    }

    /// Rank of an active state (LEASED 0 < PENDING 1 < RUNNING 2), -1 for an ended one.
    pub fn active_rank(self) -> i16 {
        RunState::ACTIVE.iter().position(|s| *s == self).map_or(-1, |i| i as i16)
    }
}

/// A list of codes as SQL writes it: `4, 5, 6, 7, 9`.
pub fn sql_list(codes: impl IntoIterator<Item = i16>) -> String {
    codes.into_iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ")
}

/// A Lookout table the writer changes (the `table` label of the row metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Job,
    JobRun,
    JobSpec,
    JobError,
}

impl Table {
    /// The table's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Table::Job => "job",
            Table::JobRun => "job_run",
            Table::JobSpec => "job_spec",
            Table::JobError => "job_error",
        }
    }
}

/// How a statement changes a table (the `operation` label of the row metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    Insert,
    Update,
}

impl Operation {
    pub const fn as_str(self) -> &'static str {
        match self {
            Operation::Insert => "insert",
            Operation::Update => "update",
        }
    }
}

/// The rows one statement (or, summed, several) affected in a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowsWritten {
    pub table: Table,
    pub operation: Operation,
    pub rows: u64,
}

impl RowsWritten {
    /// As plain values, for the metrics: (table, operation, rows).
    pub fn labels(&self) -> (&'static str, &'static str, u64) {
        (self.table.as_str(), self.operation.as_str(), self.rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_classes_partition_the_states() {
        for s in JobState::ALL {
            assert_eq!(JobState::from_code(s.code()), Some(s));
            assert_ne!(JobState::ACTIVE.contains(&s), s.is_terminal(), "{s:?} is active or terminal");
        }
        for s in RunState::ALL {
            assert_eq!(RunState::from_code(s.code()), Some(s));
            assert_ne!(RunState::ACTIVE.contains(&s), s.is_ended(), "{s:?} is active or ended");
        }
        assert_eq!(JobState::from_code(0), None);
        assert_eq!(RunState::from_code(5), None);
        assert_eq!(sql_list(JobState::TERMINAL.map(JobState::code)), "4, 5, 6, 7, 9");
        assert_eq!(RunState::Running.active_rank(), 2);
        assert_eq!(RunState::Cancelled.active_rank(), -1);
    }
}
