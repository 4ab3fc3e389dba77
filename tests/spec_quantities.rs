//! The quantities of a stored job spec, end to end: submits whose pod specs are encoded by an INDEPENDENT encoder
//! (`protoc --encode` against the reference schema) and carry a quantity on every path k8s v0.32.11 has, are
//! applied like `apply` does; the stored specs, decoded by protoc, must hold exactly what Armada's Go ingester
//! writes (values taken from running k8s.io/apimachinery v0.32.11), and a quantity Go cannot parse must be stored
//! as `0` with the original kept in `lookout_ingester.sanitized_value`.

mod support;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use lookout_ingester::proto::armadaevents::{self as ev, EventKind, kubernetes_main_object, kubernetes_object};
use support::events::*;
use support::spec_check::{self, Found};

fn protoc_encode(type_name: &str, text: &str) -> Vec<u8> {
    let protoc = std::env::var_os("PROTOC").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("protoc"));
    let reference = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/proto/reference");
    let mut child = Command::new(&protoc)
        .arg(format!("-I{}", reference.display()))
        .arg(format!("--encode={type_name}"))
        .arg("k8s.io/api/core/v1/generated.proto")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("this test needs protoc, but `{}` cannot be run: {e}", protoc.display()));
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("protoc");
    assert!(out.status.success(), "protoc --encode failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn pod_object(raw: Vec<u8>) -> ev::PodSpecWithAvoidList {
    ev::PodSpecWithAvoidList { pod_spec: Some(raw.into()), node_avoidlist: vec![] }
}

fn submit(job: &str, main: Vec<u8>, extra: Vec<Vec<u8>>) -> EventKind {
    EventKind::SubmitJob(Box::new(ev::SubmitJob {
        job_id: b(job),
        priority: 1,
        object_meta: Some(ev::ObjectMeta { namespace: b("default"), ..Default::default() }),
        main_object: Some(ev::KubernetesMainObject {
            object_meta: None,
            object: Some(kubernetes_main_object::Object::PodSpec(pod_object(main))),
        }),
        objects: extra
            .into_iter()
            .map(|raw| ev::KubernetesObject {
                object_meta: None,
                object: Some(kubernetes_object::Object::PodSpec(pod_object(raw))),
            })
            .collect(),
        ..Default::default()
    }))
}

fn q(key: &str, value: &str) -> String {
    format!("{{ key: \"{key}\" value {{ string: \"{value}\" }} }}")
}

/// A quantity on every path of a k8s v0.32.11 pod spec, most of them not in Go's canonical form.
fn every_path() -> String {
    let divisor = |resource: &str, d: &str| {
        format!("resourceFieldRef {{ resource: \"{resource}\" divisor {{ string: \"{d}\" }} }}")
    };
    format!(
        r#"
        containers {{ name: "main" image: "busybox"
          resources {{ requests {} requests {} limits {} }}
          env {{ name: "MEM" valueFrom {{ {} }} }} }}
        containers {{ name: "side" resources {{ requests {} requests {} }} }}
        initContainers {{ name: "init" resources {{ requests {} }} }}
        initContainers {{ name: "sidecar" restartPolicy: "Always" resources {{ requests {} }} }}
        volumes {{ name: "scratch" volumeSource {{ emptyDir {{ sizeLimit {{ string: "2048Ki" }} }} }} }}
        volumes {{ name: "info" volumeSource {{ downwardAPI {{ items {{ path: "cpu" {} }} }} }} }}
        volumes {{ name: "proj" volumeSource {{ projected {{ sources {{ downwardAPI {{ items {{ path: "m" {} }} }} }} }} }} }}
        volumes {{ name: "claim" volumeSource {{ ephemeral {{ volumeClaimTemplate {{ spec {{ resources {{ requests {} }} }} }} }} }} }}
        overhead {}
        ephemeralContainers {{ ephemeralContainerCommon {{ name: "debug"
          env {{ name: "CPU" valueFrom {{ {} }} }} resources {{ limits {} }} }} }}
        resources {{ requests {} }}
        "#,
        q("cpu", "1.5"),
        q("memory", "1024Mi"),
        q("memory", "1.5Gi"),
        divisor("limits.memory", "1Mi"),
        q("cpu", "250m"),
        q("memory", "1Gi"),
        q("cpu", "4"),
        q("cpu", "0.5"),
        divisor("requests.cpu", "1000m"),
        divisor("limits.memory", "0.001k"),
        q("storage", "1e3"),
        q("cpu", "0.1"),
        divisor("limits.cpu", "1.0"),
        q("cpu", "100m"),
        q("cpu", "+2"),
    )
}

fn texts(found: &[Found]) -> Vec<(&str, &str)> {
    found.iter().map(|f| (f.path.as_str(), f.text.as_str())).collect()
}

#[tokio::test]
async fn every_quantity_is_stored_as_armada_writes_it() {
    let db = support::db::TestDb::migrated().await;
    let pod = protoc_encode("k8s.io.api.core.v1.PodSpec", &every_path());
    let extra = protoc_encode(
        "k8s.io.api.core.v1.PodSpec",
        &format!("containers {{ resources {{ limits {} }} }}", q("memory", "0.5Ki")),
    );
    let msgs = vec![
        seq("q", "js").at(T0, submit("every-path", pod.clone(), vec![])).encode(),
        seq("q", "js").at(T0, submit("two-pods", pod, vec![extra])).encode(),
    ];
    support::ingest::ingest(&db.url, &msgs, 100).await; // also runs spec_check::check_all

    let all = spec_check::quantities(&db.pool).await;
    // Go: ParseQuantity, then String() (k8s.io/apimachinery v0.32.11); sums as Armada's
    // SchedulingResourceRequirementsFromPodSpec folds them.
    assert_eq!(
        texts(&all["every-path"]),
        vec![
            ("pod_spec/volumes/volumeSource/emptyDir/sizeLimit", "2Mi"),
            ("pod_spec/volumes/volumeSource/downwardAPI/items/resourceFieldRef/divisor", "1"),
            ("pod_spec/volumes/volumeSource/projected/sources/downwardAPI/items/resourceFieldRef/divisor", "1"),
            ("pod_spec/volumes/volumeSource/ephemeral/volumeClaimTemplate/spec/resources/requests[storage]", "1e3"),
            ("pod_spec/containers/env/valueFrom/resourceFieldRef/divisor", "1Mi"),
            ("pod_spec/containers/resources/limits[memory]", "1536Mi"),
            ("pod_spec/containers/resources/requests[cpu]", "1500m"),
            ("pod_spec/containers/resources/requests[memory]", "1Gi"),
            ("pod_spec/containers/resources/requests[cpu]", "250m"),
            ("pod_spec/containers/resources/requests[memory]", "1Gi"),
            ("pod_spec/initContainers/resources/requests[cpu]", "4"),
            ("pod_spec/initContainers/resources/requests[cpu]", "500m"),
            ("pod_spec/overhead[cpu]", "100m"),
            ("pod_spec/ephemeralContainers/ephemeralContainerCommon/env/valueFrom/resourceFieldRef/divisor", "1"),
            ("pod_spec/ephemeralContainers/ephemeralContainerCommon/resources/limits[cpu]", "100m"),
            ("pod_spec/resources/requests[cpu]", "+2"),
            ("scheduling_resource_requirements/limits[memory]", "1536Mi"),
            ("scheduling_resource_requirements/requests[cpu]", "4500m"),
            ("scheduling_resource_requirements/requests[memory]", "2Gi"),
        ]
    );
    let two = texts(&all["two-pods"]);
    assert!(two.contains(&("pod_specs/containers/resources/limits[memory]", "512")), "{two:?}");
    assert!(two.contains(&("pod_specs/containers/resources/requests[cpu]", "1500m")), "{two:?}");
    assert!(!two.iter().any(|(p, _)| p.starts_with("pod_spec/")), "two pod specs go in pod_specs: {two:?}");
    let fixes: i64 =
        sqlx::query_scalar("SELECT count(*) FROM lookout_ingester.sanitized_value").fetch_one(&db.pool).await.unwrap();
    assert_eq!(fixes, 0, "canonicalising is not a repair");
}

#[tokio::test]
async fn an_unparsable_quantity_is_stored_as_zero_and_recorded() {
    let db = support::db::TestDb::migrated().await;
    let pod = protoc_encode(
        "k8s.io.api.core.v1.PodSpec",
        &format!(
            r#"containers {{ name: "main" resources {{ requests {} requests {} requests {} }} }}
            volumes {{ name: "v" volumeSource {{ emptyDir {{ sizeLimit {{ string: "1..5" }} }} }} }}"#,
            q("cpu", "lots"),
            q("memory", " 1Gi"),
            q("nvidia.com/gpu", "1"),
        ),
    );
    let garbage = vec![0x12, 0x05, 0x01]; // an extra pod spec that does not frame
    let msgs = vec![seq("q", "js").at(T0, submit("bad", pod, vec![garbage.clone()])).encode()];
    let summary = support::ingest::ingest(&db.url, &msgs, 100).await; // also runs spec_check::check_all
    assert_eq!(summary.quarantined, 0, "the job is kept");

    let all = spec_check::quantities(&db.pool).await;
    assert_eq!(
        texts(&all["bad"]),
        vec![
            ("pod_spec/volumes/volumeSource/emptyDir/sizeLimit", "0"),
            ("pod_spec/containers/resources/requests[cpu]", "0"),
            ("pod_spec/containers/resources/requests[memory]", "0"),
            ("pod_spec/containers/resources/requests[nvidia.com/gpu]", "1"),
            ("scheduling_resource_requirements/requests[cpu]", "0"),
            ("scheduling_resource_requirements/requests[memory]", "0"),
            ("scheduling_resource_requirements/requests[nvidia.com/gpu]", "1"),
        ]
    );
    let job: (i64, i64, i64) =
        sqlx::query_as("SELECT cpu, memory, gpu FROM job WHERE job_id = 'bad'").fetch_one(&db.pool).await.unwrap();
    assert_eq!(job, (0, 0, 1));
    let mut fixes: Vec<(String, String, Vec<u8>)> =
        sqlx::query_as("SELECT field, fix, original FROM lookout_ingester.sanitized_value WHERE job_id = 'bad'")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    fixes.sort();
    let fixes: Vec<(&str, &str, &[u8])> =
        fixes.iter().map(|(f, x, o)| (f.as_str(), x.as_str(), o.as_slice())).collect();
    assert_eq!(
        fixes,
        vec![
            ("job.cpu", "bad_quantity", &b"lots"[..]),
            ("job.memory", "bad_quantity", &b" 1Gi"[..]),
            ("job_spec.pod_spec", "bad_quantity", &b" 1Gi"[..]),
            ("job_spec.pod_spec", "bad_quantity", &b"1..5"[..]),
            ("job_spec.pod_spec", "bad_quantity", &b"lots"[..]),
            ("job_spec.pod_spec", "undecodable_pod_spec", garbage.as_slice()),
        ]
    );
}

#[test]
fn the_grammar_check_is_go_s() {
    for ok in ["1", "1.5", "+1Gi", "-.5", "1.", ".", "1e3", "1E-3", "1e+3", "100Ei", "5n"] {
        assert_eq!(spec_check::grammar(ok), Ok(()), "{ok}");
    }
    for bad in ["", " 1", "1 ", "1x", "1..5", "lots", "1K", "1e", "1e3.5", "Gi1", "1ee3"] {
        assert!(spec_check::grammar(bad).is_err(), "{bad}");
    }
}
