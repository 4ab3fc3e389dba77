//! Reading rows back, in a form tests can compare exactly.
#![allow(dead_code)]

use std::io::Read;

use sqlx::PgPool;
use sqlx::Row as _;
use sqlx::postgres::PgRow;

/// Every column of `job` a test may look at; timestamps as `YYYY-MM-DD HH:MM:SS[.ffffff]` text (UTC wall clock).
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub job_id: String,
    pub queue: String,
    pub owner: String,
    pub jobset: String,
    pub cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub gpu: i64,
    pub priority: i64,
    pub submitted: String,
    pub cancelled: Option<String>,
    pub state: i16,
    pub last_transition_time: String,
    pub last_transition_time_seconds: i64,
    pub duplicate: bool,
    pub priority_class: Option<String>,
    pub latest_run_id: Option<String>,
    pub cancel_reason: Option<String>,
    pub namespace: Option<String>,
    pub annotations: serde_json::Value,
    pub external_job_uri: Option<String>,
    pub cancel_user: Option<String>,
    pub failure_category: Option<String>,
    pub failure_subcategory: Option<String>,
    pub failure_reason: Option<String>,
    pub failure_message: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub run_id: String,
    pub job_id: String,
    pub cluster: String,
    pub node: Option<String>,
    pub pending: Option<String>,
    pub started: Option<String>,
    pub finished: Option<String>,
    pub state: i16,
    pub error: Option<String>,
    pub exit_code: Option<i32>,
    pub leased: Option<String>,
    pub debug: Option<String>,
    pub pool: Option<String>,
    pub ingress_addresses: Option<serde_json::Value>,
    pub failure_category: Option<String>,
    pub failure_subcategory: Option<String>,
    pub termination_reason: Option<serde_json::Value>,
}

const TS: &str = "YYYY-MM-DD HH24:MI:SS.US";

pub fn unzip(blob: &[u8]) -> String {
    let mut out = String::new();
    flate2::read::ZlibDecoder::new(blob).read_to_string(&mut out).expect("blob is a zlib stream of UTF-8 text");
    out
}

fn job_from(r: &PgRow) -> Job {
    Job {
        job_id: r.get("job_id"),
        queue: r.get("queue"),
        owner: r.get("owner"),
        jobset: r.get("jobset"),
        cpu: r.get("cpu"),
        memory: r.get("memory"),
        ephemeral_storage: r.get("ephemeral_storage"),
        gpu: r.get("gpu"),
        priority: r.get("priority"),
        submitted: r.get("submitted"),
        cancelled: r.get("cancelled"),
        state: r.get("state"),
        last_transition_time: r.get("last_transition_time"),
        last_transition_time_seconds: r.get("last_transition_time_seconds"),
        duplicate: r.get("duplicate"),
        priority_class: r.get("priority_class"),
        latest_run_id: r.get("latest_run_id"),
        cancel_reason: r.get("cancel_reason"),
        namespace: r.get("namespace"),
        annotations: r.get("annotations"),
        external_job_uri: r.get("external_job_uri"),
        cancel_user: r.get("cancel_user"),
        failure_category: r.get("ingester_failure_category"),
        failure_subcategory: r.get("ingester_failure_subcategory"),
        failure_reason: r.get("ingester_failure_reason"),
        failure_message: r.get("ingester_failure_message"),
    }
}

pub async fn jobs(pool: &PgPool) -> Vec<Job> {
    let q = format!(
        "SELECT job_id, queue, owner, jobset, cpu, memory, ephemeral_storage, gpu, priority,
                to_char(submitted, '{TS}') AS submitted, to_char(cancelled, '{TS}') AS cancelled, state,
                to_char(last_transition_time, '{TS}') AS last_transition_time, last_transition_time_seconds,
                duplicate, priority_class, latest_run_id, cancel_reason, namespace, annotations, external_job_uri,
                cancel_user, ingester_failure_category, ingester_failure_subcategory, ingester_failure_reason,
                ingester_failure_message
         FROM job ORDER BY job_id"
    );
    sqlx::query(&q).fetch_all(pool).await.expect("read jobs").iter().map(job_from).collect()
}

pub async fn job(pool: &PgPool, job_id: &str) -> Job {
    jobs(pool).await.into_iter().find(|j| j.job_id == job_id).unwrap_or_else(|| panic!("no job {job_id}"))
}

pub async fn runs(pool: &PgPool) -> Vec<Run> {
    let q = format!(
        "SELECT run_id, job_id, cluster, node, to_char(pending, '{TS}') AS pending, to_char(started, '{TS}') AS started,
                to_char(finished, '{TS}') AS finished, job_run_state, error, exit_code,
                to_char(leased, '{TS}') AS leased, debug, pool, ingress_addresses, failure_category,
                failure_subcategory, scheduler_termination_reason
         FROM job_run ORDER BY run_id"
    );
    let rows = sqlx::query(&q).fetch_all(pool).await.expect("read runs");
    rows.iter()
        .map(|r| Run {
            run_id: r.get("run_id"),
            job_id: r.get("job_id"),
            cluster: r.get("cluster"),
            node: r.get("node"),
            pending: r.get("pending"),
            started: r.get("started"),
            finished: r.get("finished"),
            state: r.get("job_run_state"),
            error: r.get::<Option<Vec<u8>>, _>("error").map(|b| unzip(&b)),
            exit_code: r.get("exit_code"),
            leased: r.get("leased"),
            debug: r.get::<Option<Vec<u8>>, _>("debug").map(|b| unzip(&b)),
            pool: r.get("pool"),
            ingress_addresses: r.get("ingress_addresses"),
            failure_category: r.get("failure_category"),
            failure_subcategory: r.get("failure_subcategory"),
            termination_reason: r.get("scheduler_termination_reason"),
        })
        .collect()
}

pub async fn run(pool: &PgPool, run_id: &str) -> Run {
    runs(pool).await.into_iter().find(|r| r.run_id == run_id).unwrap_or_else(|| panic!("no run {run_id}"))
}

/// `job_error.error`, decompressed.
pub async fn job_error(pool: &PgPool, job_id: &str) -> Option<String> {
    let blob: Option<Vec<u8>> = sqlx::query_scalar("SELECT error FROM job_error WHERE job_id = $1")
        .bind(job_id)
        .fetch_optional(pool)
        .await
        .expect("read job_error");
    blob.map(|b| unzip(&b))
}

/// `job_spec.job_spec`, decompressed (protobuf bytes of `api.Job`).
pub async fn job_spec(pool: &PgPool, job_id: &str) -> Option<Vec<u8>> {
    let blob: Option<Vec<u8>> = sqlx::query_scalar("SELECT job_spec FROM job_spec WHERE job_id = $1")
        .bind(job_id)
        .fetch_optional(pool)
        .await
        .expect("read job_spec");
    blob.map(|b| {
        let mut out = Vec::new();
        flate2::read::ZlibDecoder::new(b.as_slice()).read_to_end(&mut out).expect("zlib");
        out
    })
}

pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect("count")
}

/// Seconds → the text form the readers use.
pub fn ts(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0).unwrap().naive_utc().format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}
