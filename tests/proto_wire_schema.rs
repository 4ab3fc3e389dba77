//! Wire compatibility of what we encode (`api.Job`, decoded by protoc) and of the schema itself (our `proto/`
//! against the reference, field by field).

mod support;

use std::collections::{BTreeMap, BTreeSet};

use prost::Message;
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorSet, field_descriptor_proto};

use lookout_ingester::proto::armadaevents::{self as ae, EventKind, kubernetes_object};
use lookout_ingester::proto::k8s::io::api::core::v1 as core_v1;
use lookout_ingester::proto::k8s::io::api::networking::v1 as net_v1;
use lookout_ingester::proto::k8s::io::apimachinery::pkg::apis::meta::v1 as meta_v1;
use lookout_ingester::proto::{Bytes, api};
use support::protoc::*;

// ---------------------------------------------------------------------------------------------------------------
// 5. api.Job encoded by us, decoded by protoc
// ---------------------------------------------------------------------------------------------------------------

fn k8s_meta(meta: &ae::ObjectMeta) -> meta_v1::ObjectMeta {
    let entries = |list: &[ae::StringMapEntry]| {
        list.iter().map(|e| meta_v1::StringMapEntry::new(e.key.clone(), e.value.clone())).collect()
    };
    let some = |b: &Bytes| (!b.is_empty()).then(|| b.clone());
    meta_v1::ObjectMeta {
        name: some(&meta.name),
        generate_name: None,
        namespace: some(&meta.namespace),
        uid: some(&meta.kubernetes_id),
        labels: entries(&meta.labels),
        annotations: entries(&meta.annotations),
    }
}

#[test]
fn api_job_encoded_by_us_decodes_with_protoc() {
    let seq = decode_sequence(protoc_encode("armadaevents.EventSequence", &fixture("event_sequence.txtpb")));
    let submit = arm!(seq.events[0], SubmitJob);
    let meta = submit.object_meta.as_ref().unwrap();
    let api_entries = |list: &[ae::StringMapEntry]| {
        list.iter().map(|e| api::StringMapEntry::new(e.key.clone(), e.value.clone())).collect()
    };

    let mut k8s_ingress = Vec::new();
    let mut k8s_service = Vec::new();
    let mut pod_specs = Vec::new();
    for object in &submit.objects {
        let metadata = object.object_meta.as_ref().map(k8s_meta);
        match &object.object {
            Some(kubernetes_object::Object::Ingress(spec)) => {
                k8s_ingress.push(net_v1::Ingress { metadata, spec: Some(spec.clone()) })
            }
            Some(kubernetes_object::Object::Service(spec)) => {
                k8s_service.push(core_v1::Service { metadata, spec: Some(spec.clone()) })
            }
            Some(kubernetes_object::Object::PodSpec(p)) => pod_specs.push(p.pod_spec.clone().unwrap()),
            _ => {}
        }
    }

    let job = api::Job {
        id: submit.job_id.clone(),
        client_id: submit.deduplication_id.clone(),
        job_set_id: seq.job_set_name.clone(),
        queue: seq.queue.clone(),
        namespace: meta.namespace.clone(),
        labels: api_entries(&meta.labels),
        annotations: api_entries(&meta.annotations),
        required_node_labels: Vec::new(),
        owner: seq.user_id.clone(),
        queue_ownership_user_groups: Vec::new(),
        compressed_queue_ownership_user_groups: Bytes::new(),
        priority: f64::from(submit.priority),
        pod_spec: main_pod_spec(submit).pod_spec.clone(),
        pod_specs,
        scheduling_resource_requirements: Some(core_v1::ResourceRequirements {
            limits: vec![core_v1::QuantityMapEntry::new("cpu", "2")],
            requests: vec![
                core_v1::QuantityMapEntry::new("cpu", "1850m"),
                core_v1::QuantityMapEntry::new("memory", "1Gi"),
            ],
            claims: Vec::new(),
        }),
        created: seq.events[0].created,
        ingress: Vec::new(),
        services: Vec::new(),
        k8s_ingress,
        k8s_service,
        scheduler: Bytes::new(),
    };
    let ours = protoc_decode("api.Job", &job.encode_to_vec());

    // Canonical form of the expectation: the fixture passed through protoc both ways.
    let expected = protoc_decode("api.Job", &protoc_encode("api.Job", &fixture("api_job.expected.txtpb")));
    assert_eq!(ours, expected, "protoc's view of our api.Job differs from api_job.expected.txtpb");
    // The copied pod spec bytes print as a real PodSpec, including what the crate does not model.
    for needle in ["pod_spec {", "containers {", "name: \"main\"", "tolerations {", "nodeSelector {", "pod_specs {"] {
        assert!(ours.contains(needle), "{needle:?} missing from:\n{ours}");
    }
    // And Rust reads it back the same.
    assert_eq!(api::Job::decode(&job.encode_to_vec()[..]).unwrap(), job);
}

// ---------------------------------------------------------------------------------------------------------------
// 6. the schema under proto/ is wire-compatible with the reference schema
// ---------------------------------------------------------------------------------------------------------------

fn descriptor_set(include: &str, files: &[&str]) -> FileDescriptorSet {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("set.pb");
    let mut args = vec![
        format!("-I{}", manifest_dir().join(include).display()),
        "--include_imports".to_string(),
        format!("--descriptor_set_out={}", out.display()),
    ];
    args.extend(files.iter().map(|f| f.to_string()));
    protoc(&args, b"");
    FileDescriptorSet::decode(&std::fs::read(out).expect("descriptor set")[..]).expect("descriptor set decodes")
}

/// All messages by full name (".pkg.Outer.Inner").
fn messages(set: &FileDescriptorSet) -> BTreeMap<String, DescriptorProto> {
    fn walk(prefix: &str, msg: &DescriptorProto, out: &mut BTreeMap<String, DescriptorProto>) {
        let name = format!("{prefix}.{}", msg.name());
        for nested in &msg.nested_type {
            walk(&name, nested, out);
        }
        out.insert(name, msg.clone());
    }
    let mut out = BTreeMap::new();
    for file in &set.file {
        for msg in &file.message_type {
            walk(&format!(".{}", file.package()), msg, &mut out);
        }
    }
    out
}

fn is_map_entry(msg: &DescriptorProto) -> bool {
    msg.options.as_ref().is_some_and(|o| o.map_entry())
}

fn oneof_name(msg: &DescriptorProto, field: &FieldDescriptorProto) -> Option<String> {
    if field.proto3_optional() {
        return None; // synthetic oneof of a proto3 `optional`
    }
    field.oneof_index.map(|i| msg.oneof_decl[i as usize].name().to_string())
}

/// Checks that `ours` reads/writes the same bytes as `reference` (see the module docs of `lookout_ingester::proto`).
fn check_field(
    ctx: &str,
    ours: &FieldDescriptorProto,
    ours_msgs: &BTreeMap<String, DescriptorProto>,
    reference: &FieldDescriptorProto,
    ref_msgs: &BTreeMap<String, DescriptorProto>,
    errors: &mut Vec<String>,
) {
    use field_descriptor_proto::{Label, Type};
    let mut fail = |why: &str| errors.push(format!("{ctx}: {why} (ours {ours:?} vs reference {reference:?})"));
    if ours.name() != reference.name() {
        fail("name differs");
    }
    let ref_map =
        (reference.r#type() == Type::Message).then(|| &ref_msgs[reference.type_name()]).filter(|m| is_map_entry(m));
    if let Some(ref_entry) = ref_map {
        // map<K, V> ↔ repeated <X>MapEntry { K' key = 1; V' value = 2; }
        if ours.r#type() != Type::Message || ours.label() != Label::Repeated || !ours.type_name().ends_with("MapEntry")
        {
            return fail("a map must be a repeated ...MapEntry");
        }
        let our_entry = &ours_msgs[ours.type_name()];
        for number in [1, 2] {
            let of = our_entry.field.iter().find(|f| f.number() == number);
            let rf = ref_entry.field.iter().find(|f| f.number() == number).unwrap();
            match of {
                Some(of) => check_field(&format!("{ctx} entry"), of, ours_msgs, rf, ref_msgs, errors),
                None => errors.push(format!("{ctx}: map entry lacks field {number}")),
            }
        }
        if our_entry.field.len() != 2 {
            errors.push(format!("{ctx}: map entry must have exactly key and value"));
        }
        return;
    }
    let ours_repeated = ours.label() == Label::Repeated;
    if ours_repeated != (reference.label() == Label::Repeated) {
        return fail("cardinality differs");
    }
    match (reference.r#type(), ours.r#type()) {
        // Strings are bytes (lenient UTF-8); sub-messages may be raw bytes.
        (Type::String, Type::Bytes) | (Type::Message, Type::Bytes) => {}
        (Type::String, _) => fail("a string must be declared bytes"),
        (Type::Message, Type::Message) | (Type::Enum, Type::Enum) => {
            if ours.type_name() != reference.type_name() {
                fail("type name differs");
            }
        }
        (r, o) if r == o => {}
        _ => fail("type differs"),
    }
}

/// Everything that makes the schema under `ours_dir` not wire-compatible with the reference schema.
fn compatibility_errors(ours_dir: &str) -> Vec<String> {
    let files = ["armadaevents/events.proto", "api/submit.proto"];
    let ours_set = descriptor_set(ours_dir, &files);
    let ref_set = descriptor_set("tests/fixtures/proto/reference", &files);
    let ours = messages(&ours_set);
    let reference = messages(&ref_set);
    let mut errors = Vec::new();

    for (name, msg) in &ours {
        if name.ends_with("MapEntry") {
            continue; // our stand-ins for map entries, checked with the map fields
        }
        let Some(ref_msg) = reference.get(name) else {
            errors.push(format!("{name}: not in the reference schema"));
            continue;
        };
        let ref_fields: BTreeMap<i32, &FieldDescriptorProto> = ref_msg.field.iter().map(|f| (f.number(), f)).collect();
        for field in &msg.field {
            let ctx = format!("{name}.{}", field.name());
            match ref_fields.get(&field.number()) {
                None => errors.push(format!("{ctx} = {}: not in the reference schema", field.number())),
                Some(rf) => {
                    check_field(&ctx, field, &ours, rf, &reference, &mut errors);
                    if oneof_name(msg, field) != oneof_name(ref_msg, rf) {
                        errors.push(format!("{ctx}: oneof membership differs"));
                    }
                }
            }
        }
        let reserved =
            |m: &DescriptorProto| m.reserved_range.iter().map(|r| (r.start(), r.end())).collect::<BTreeSet<_>>();
        if reserved(msg) != reserved(ref_msg) {
            errors.push(format!("{name}: reserved ranges differ"));
        }
        // armadaevents messages and api.Job must be complete: every Armada field declared.
        if name.starts_with(".armadaevents.") || name == ".api.Job" {
            let ours_numbers: BTreeSet<i32> = msg.field.iter().map(|f| f.number()).collect();
            for rf in &ref_msg.field {
                if !ours_numbers.contains(&rf.number()) {
                    errors.push(format!("{name}: lacks {} = {}", rf.name(), rf.number()));
                }
            }
        }
    }
    // Every armadaevents message of the reference exists here too.
    for name in reference.keys().filter(|n| n.starts_with(".armadaevents.") && !is_map_entry(&reference[*n])) {
        if !ours.contains_key(name) {
            errors.push(format!("{name}: missing from proto/"));
        }
    }
    // Enums: same values.
    let enums = |set: &FileDescriptorSet| -> BTreeMap<String, Vec<(String, i32)>> {
        set.file
            .iter()
            .flat_map(|f| {
                f.enum_type.iter().map(move |e| {
                    let values = e.value.iter().map(|v| (v.name().to_string(), v.number())).collect();
                    (format!(".{}.{}", f.package(), e.name()), values)
                })
            })
            .collect()
    };
    let (ours_enums, ref_enums) = (enums(&ours_set), enums(&ref_set));
    for (name, values) in &ours_enums {
        if ref_enums.get(name) != Some(values) {
            errors.push(format!("enum {name} differs from the reference"));
        }
    }
    for name in [".armadaevents.KubernetesReason", ".armadaevents.JobState"] {
        if !ours_enums.contains_key(name) {
            errors.push(format!("enum {name} missing"));
        }
    }
    errors
}

#[test]
fn schema_is_wire_compatible_with_reference() {
    let errors = compatibility_errors("proto");
    assert!(errors.is_empty(), "proto/ is not wire-compatible with the reference schema:\n{}", errors.join("\n"));
}

/// The checker itself: the reference schema, with its real `string`s and maps, must be rejected as "ours".
#[test]
fn schema_check_rejects_strict_strings_and_maps() {
    let errors = compatibility_errors("tests/fixtures/proto/reference");
    let has = |needle: &str| errors.iter().any(|e| e.contains(needle));
    assert!(has(".armadaevents.EventSequence.queue: a string must be declared bytes"), "{errors:#?}");
    assert!(has(".armadaevents.ObjectMeta.annotations: a map must be a repeated ...MapEntry"), "{errors:#?}");
}
