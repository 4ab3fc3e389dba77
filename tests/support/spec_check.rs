//! Every stored `job_spec` must read in Lookout as Armada's ingester would have written it. This decodes all of a
//! database's specs with an INDEPENDENT decoder — `protoc --decode` against the reference schema
//! (`tests/fixtures/proto/reference`, k8s types with real strings and maps, every path to a Quantity in a pod
//! spec) — and checks every quantity in them:
//! - it matches Kubernetes' grammar (Go's `ParseQuantity` would accept it, so Lookout does not answer 400);
//! - it is written as Go writes it: parsing and writing it again gives the same text;
//! - for a pod spec with one container and no init containers, each scheduling requirement is that container's
//!   quantity in canonical form (Armada adds it onto zero, which writes `1Gi` for `1Gi`, never `1073741824`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use lookout_ingester::convert::quantity::{Quantity, Slot};
use sqlx::PgPool;

/// One quantity found in a decoded spec: its path (message and field names, `[key]` for a map entry) and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub path: String,
    pub text: String,
}

/// The quantities of every job spec in the database, by job id; panics when a spec does not decode.
pub async fn quantities(pool: &PgPool) -> BTreeMap<String, Vec<Found>> {
    let rows: Vec<(String, Vec<u8>)> = sqlx::query_as("SELECT job_id, job_spec FROM job_spec ORDER BY job_id")
        .fetch_all(pool)
        .await
        .expect("read job_spec");
    let mut wrapped = Vec::new();
    for (job_id, blob) in &rows {
        let mut spec = Vec::new();
        flate2::read::ZlibDecoder::new(blob.as_slice())
            .read_to_end(&mut spec)
            .unwrap_or_else(|e| panic!("job_spec of {job_id} is not a zlib stream: {e}"));
        prost::encoding::encode_varint(10, &mut wrapped); // field 1, length-delimited
        prost::encoding::encode_varint(spec.len() as u64, &mut wrapped);
        wrapped.extend_from_slice(&spec);
    }
    let text = protoc_decode(&wrapped);
    let specs = split_jobs(&text);
    assert_eq!(specs.len(), rows.len(), "protoc decoded {} specs of {}", specs.len(), rows.len());
    rows.iter().map(|(id, _)| id.clone()).zip(specs).collect()
}

/// Checks every spec of the database (see the module comment); returns how many quantities were checked.
pub async fn check_all(pool: &PgPool) -> usize {
    let all = quantities(pool).await;
    let mut problems = Vec::new();
    let mut checked = 0;
    for (job, found) in &all {
        for f in found {
            checked += 1;
            if let Err(why) = grammar(&f.text) {
                problems.push(format!("{job} {}: {:?} is not a quantity ({why})", f.path, f.text));
                continue;
            }
            let again = Quantity::parse(f.text.as_bytes()).expect("grammar checked").to_go_string();
            if again != f.text {
                problems.push(format!("{job} {}: {:?} is not as Go writes it ({again:?})", f.path, f.text));
            }
        }
        problems.extend(single_container_sums(job, found));
    }
    assert!(problems.is_empty(), "stored job specs Lookout would not show as Armada does:\n{}", problems.join("\n"));
    checked
}

/// With one container and no init containers, Armada's scheduling requirements are that container's values.
fn single_container_sums(job: &str, found: &[Found]) -> Vec<String> {
    let main: Vec<&Found> = found.iter().filter(|f| f.path.starts_with("pod_spec/")).collect();
    if main.iter().any(|f| f.path.starts_with("pod_spec/initContainers/")) {
        return Vec::new();
    }
    let mut problems = Vec::new();
    for f in found.iter().filter(|f| f.path.starts_with("scheduling_resource_requirements/")) {
        let tail = &f.path["scheduling_resource_requirements/".len()..];
        let from_container: Vec<&&Found> =
            main.iter().filter(|c| c.path.strip_prefix("pod_spec/containers/resources/") == Some(tail)).collect();
        if from_container.len() != 1 {
            continue; // several containers: a real sum
        }
        let mut slot = Slot::default();
        slot.add(&Quantity::parse(from_container[0].text.as_bytes()).expect("checked")).expect("in range");
        let want = slot.get().expect("added").to_go_string();
        if f.text != want {
            problems.push(format!("{job} {}: {:?}, Armada writes {want:?}", f.path, f.text));
        }
    }
    problems
}

/// Go's quantity grammar (`^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$`, then a known suffix or an exponent
/// that fits an int64), written out independently of the crate's parser.
pub fn grammar(s: &str) -> Result<(), &'static str> {
    let b = s.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let number_start = i;
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
        i += 1;
    }
    if i == number_start {
        return Err("no number");
    }
    if b[number_start..i].iter().filter(|&&c| c == b'.').count() > 1 {
        return Err("two decimal points");
    }
    let suffix = &s[i..];
    match suffix {
        "" | "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => Ok(()),
        _ if suffix.len() > 1 && suffix.starts_with(['e', 'E']) => {
            let exp = &suffix[1..];
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()) && exp.parse::<i64>().is_ok() {
                Ok(())
            } else {
                Err("bad exponent")
            }
        }
        _ => Err("unknown suffix"),
    }
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/proto")
}

fn protoc_decode(binary: &[u8]) -> String {
    let protoc = std::env::var_os("PROTOC").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("protoc"));
    let mut child = Command::new(&protoc)
        .arg(format!("-I{}", fixtures().join("reference").display()))
        .arg(format!("-I{}", fixtures().join("spec_check").display()))
        .arg("--decode=spec_check.Jobs")
        .arg("jobs.proto")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("the job spec check needs protoc, but `{}` cannot be run: {e}", protoc.display()));
    let mut stdin = child.stdin.take().expect("stdin");
    let input = binary.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("protoc");
    writer.join().expect("writer").expect("protoc stdin");
    assert!(
        out.status.success(),
        "stored job specs do not decode as api.Job: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("protoc prints UTF-8")
}

/// Walks protoc's text output: one list of quantities per top-level `jobs { … }`.
fn split_jobs(text: &str) -> Vec<Vec<Found>> {
    let mut jobs = Vec::new();
    let mut path: Vec<String> = Vec::new();
    let mut key_at: Vec<Option<String>> = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_suffix(" {") {
            if path.is_empty() && name == "jobs" {
                jobs.push(Vec::new());
            }
            path.push(name.to_string());
            key_at.push(None);
        } else if line == "}" {
            path.pop();
            key_at.pop();
        } else if let Some(key) = line.strip_prefix("key: ") {
            if let Some(slot) = key_at.last_mut() {
                *slot = Some(unquote(key));
            }
        } else if let Some(value) = line.strip_prefix("string: ") {
            // A Quantity's only field. Path: the fields below `jobs`, a map entry shown as `name[key]`.
            let mut parts = Vec::new();
            for (i, name) in path.iter().enumerate().skip(1) {
                match name.as_str() {
                    "value" if key_at[i - 1].is_some() => {
                        let last: &mut String = parts.last_mut().expect("a map has a field name");
                        last.push_str(&format!("[{}]", key_at[i - 1].as_deref().unwrap_or_default()));
                    }
                    _ => parts.push(name.clone()),
                }
            }
            jobs.last_mut().expect("inside jobs").push(Found { path: parts.join("/"), text: unquote(value) });
        }
    }
    jobs
}

fn unquote(s: &str) -> String {
    s.trim().trim_matches('"').replace("\\\"", "\"")
}
