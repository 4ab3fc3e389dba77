//! `SubmitJob` (1): creates the job (QUEUED, `submitted` = event time) and its `job_spec` (a zlib-compressed
//! `api.Job`), unless the job exists. Resources are the main pod spec's container requests (docs/compatibility.md §2.10); a submit
//! without a usable pod spec still creates the job, with resources 0 and a spec without pod spec (docs/compatibility.md D10).

use prost::Message as _;

use crate::changes::{JobRow, JobSpecRow, RowChanges};
use crate::proto::armadaevents::{SubmitJob, kubernetes_main_object};
use crate::proto::k8s::io::api::core::v1::PodSpec;
use crate::proto::or_empty;

use super::{Ctx, annotations, job_spec, limits, resources};

/// Annotation holding the external job URI when the field is empty.
const EXTERNAL_URI_ANNOTATION: &str = "armadaproject.io/externalJobUri";

pub fn fold(ctx: &mut Ctx<'_>, e: &SubmitJob, out: &mut RowChanges) {
    let Some(job_id) = ctx.job_id(out, &e.job_id, "submitJob") else { return };
    let meta = e.object_meta.as_ref();
    let namespace =
        meta.map(|m| ctx.fx.fit(&m.namespace, Some(limits::NAMESPACE), "job.namespace")).unwrap_or_default();
    let entries = meta.map(|m| m.annotations.as_slice()).unwrap_or_default();
    let annotations = annotations::stored(entries, ctx.conv, &mut ctx.fx);

    let main_pod = main_pod_spec(ctx, e);
    let requests = main_pod.as_ref().map(|p| resources::requests(p, &mut ctx.fx)).unwrap_or_default();
    let priority_class = main_pod.as_ref().and_then(|p| {
        ctx.fx.fit_opt(or_empty(&p.priority_class_name), Some(limits::PRIORITY_CLASS), "job.priority_class")
    });
    let uri_bytes: &[u8] = if e.external_job_uri.is_empty() {
        annotations::raw(entries, EXTERNAL_URI_ANNOTATION).unwrap_or_default()
    } else {
        &e.external_job_uri
    };
    let external_job_uri = ctx.fx.fit(uri_bytes, Some(limits::EXTERNAL_URI), "job.external_job_uri");

    let input = job_spec::SpecInput {
        job_id: &job_id,
        queue: ctx.queue,
        jobset: ctx.jobset,
        owner: ctx.owner,
        namespace: &namespace,
        created: ctx.ts,
        submit: e,
        main_pod: main_pod.as_ref(),
    };
    let spec = job_spec::api_job(&input, &mut ctx.fx).encode_to_vec();
    let job = JobRow {
        job_id: job_id.clone(),
        queue: ctx.queue.to_string(),
        owner: ctx.owner.to_string(),
        jobset: ctx.jobset.to_string(),
        cpu: requests.cpu,
        memory: requests.memory,
        ephemeral_storage: requests.ephemeral_storage,
        gpu: requests.gpu,
        priority: i64::from(e.priority),
        submitted: ctx.ts,
        priority_class,
        namespace,
        annotations,
        external_job_uri,
    };
    out.create_job(job, JobSpecRow { job_id, spec: ctx.blob(&spec) });
}

/// The main object's pod spec, decoded; `None` (recorded as a degraded submit) when there is none or it does not
/// decode.
fn main_pod_spec(ctx: &mut Ctx<'_>, e: &SubmitJob) -> Option<PodSpec> {
    let with_avoid_list = match e.main_object.as_ref().and_then(|o| o.object.as_ref()) {
        Some(kubernetes_main_object::Object::PodSpec(p)) => p,
        None => {
            ctx.fx.record("job.job_spec", "no_pod_spec", Vec::new());
            return None;
        }
    };
    match with_avoid_list.decode_pod_spec() {
        Ok(Some(pod)) => Some(pod),
        Ok(None) => {
            ctx.fx.record("job.job_spec", "no_pod_spec", Vec::new());
            None
        }
        Err(_) => {
            let original = with_avoid_list.pod_spec.as_deref().unwrap_or_default().to_vec();
            ctx.fx.record("job.job_spec", "undecodable_pod_spec", original);
            None
        }
    }
}
