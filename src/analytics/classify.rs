//! Ingester-side failure classification (opt-in, `analytics.classify_failures`): a category for a terminal run
//! error that carries none, derived from the error's reason alone. Where Armada itself has a name for the cause
//! (the scheduler's `internal` subcategories), that name is used, so the same failure gets the same category
//! whether Armada or the ingester named it; the row records which one did (`ingester_category_source`).

use crate::proto::armadaevents::error::Reason;
use crate::proto::armadaevents::{ContainerError, Error, KubernetesReason, PodError};

/// What [`crate::analytics`] writes into `job_run.ingester_category_source` when it set the category.
pub const SOURCE_INGESTER: &str = "ingester";

/// A derived (category, subcategory).
pub type Derived = (&'static str, Option<&'static str>);

/// The category of a terminal run error that carries none, or `None` when its reason says nothing definite
/// (e.g. a pod error with an ordinary non-zero exit code).
pub fn run_error(error: &Error) -> Option<Derived> {
    match error.reason.as_ref()? {
        Reason::LeaseExpired(_) => Some(("internal", Some("lease-expired"))),
        Reason::MaxRunsExceeded(_) => Some(("internal", Some("max-runs-exceeded"))),
        Reason::JobRejected(_) => Some(("internal", Some("job-rejected"))),
        Reason::PodLeaseReturned(_) => Some(("lease-returned", None)),
        Reason::JobRunPreemptedError(_) => Some(PREEMPTED),
        Reason::GangJobUnschedulable(_) => Some(("scheduling", Some("gang-unschedulable"))),
        Reason::PodError(p) => pod_error(p),
        Reason::ContainerError(c) => container(c),
        _ => None,
    }
}

/// The category of a run ended by `JobRunPreempted`.
pub const PREEMPTED: Derived = ("preemption", None);

fn pod_error(p: &PodError) -> Option<Derived> {
    p.container_errors.iter().find_map(container).or_else(|| reason(p.kubernetes_reason))
}

fn container(c: &ContainerError) -> Option<Derived> {
    if c.kubernetes_reason == KubernetesReason::Oom as i32 || c.reason[..] == b"OOMKilled"[..] {
        return Some(("oom", Some("oom-killed")));
    }
    if c.exit_code == 137 {
        // SIGKILL: the kernel's OOM killer is the usual sender, but not the only one.
        return Some(("oom", Some("exit-137")));
    }
    reason(c.kubernetes_reason)
}

fn reason(r: i32) -> Option<Derived> {
    match KubernetesReason::try_from(r).ok()? {
        KubernetesReason::Oom => Some(("oom", Some("oom-killed"))),
        KubernetesReason::Evicted => Some(("eviction", None)),
        KubernetesReason::DeadlineExceeded => Some(("deadline", None)),
        KubernetesReason::AppError => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::armadaevents::{LeaseExpired, MaxRunsExceeded, PodLeaseReturned};

    fn err(reason: Reason) -> Error {
        Error { terminal: true, reason: Some(reason), ..Default::default() }
    }

    fn pod(reason: KubernetesReason, codes: &[(i32, KubernetesReason)]) -> Reason {
        Reason::PodError(PodError {
            kubernetes_reason: reason as i32,
            container_errors: codes
                .iter()
                .map(|(code, r)| ContainerError {
                    exit_code: *code,
                    kubernetes_reason: *r as i32,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    #[test]
    fn reasons() {
        use KubernetesReason::*;
        assert_eq!(run_error(&err(Reason::LeaseExpired(LeaseExpired {}))), Some(("internal", Some("lease-expired"))));
        assert_eq!(
            run_error(&err(Reason::MaxRunsExceeded(MaxRunsExceeded::default()))),
            Some(("internal", Some("max-runs-exceeded")))
        );
        assert_eq!(
            run_error(&err(Reason::PodLeaseReturned(PodLeaseReturned::default()))),
            Some(("lease-returned", None))
        );
        assert_eq!(run_error(&err(pod(AppError, &[(1, AppError), (137, AppError)]))), Some(("oom", Some("exit-137"))));
        assert_eq!(run_error(&err(pod(AppError, &[(1, Oom)]))), Some(("oom", Some("oom-killed"))));
        assert_eq!(run_error(&err(pod(Evicted, &[]))), Some(("eviction", None)));
        assert_eq!(run_error(&err(pod(DeadlineExceeded, &[(2, AppError)]))), Some(("deadline", None)));
        assert_eq!(run_error(&err(pod(AppError, &[(1, AppError)]))), None);
        assert_eq!(run_error(&Error::default()), None);
    }
}
