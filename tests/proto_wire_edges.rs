//! Wire compatibility, edge cases: invalid UTF-8, unknown fields and oneof arms, unparsed quantities (helpers and the
//! protoc plumbing: `tests/support/protoc.rs`).

mod support;

use std::collections::BTreeMap;

use prost::Message;

use lookout_ingester::proto::armadaevents::{self as ae, EventKind, error::Reason};
use lookout_ingester::proto::k8s::io::api::core::v1 as core_v1;
use lookout_ingester::proto::{Utf8Repairs, int_text_map, or_empty, text, text_checked, text_map};
use support::protoc::*;

// ---------------------------------------------------------------------------------------------------------------
// 2. invalid UTF-8 in string fields
// ---------------------------------------------------------------------------------------------------------------

/// A prost message that declares `queue` as a real `string`, as a strict decoder would.
#[derive(Clone, PartialEq, Message)]
struct StrictEventSequence {
    #[prost(string, tag = "1")]
    queue: String,
}

#[test]
fn invalid_utf8_in_string_fields_decodes_and_is_reported() {
    let text_format = fixture("invalid_utf8.txtpb");
    let markers = String::from_utf8(text_format.clone())
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| l.matches("~~").count())
        .sum::<usize>();
    let mut binary = protoc_encode("armadaevents.EventSequence", &text_format);
    let mut patched = 0;
    for i in 0..binary.len().saturating_sub(1) {
        if &binary[i..i + 2] == b"~~" {
            binary[i] = 0xFF;
            binary[i + 1] = 0xFE;
            patched += 1;
        }
    }
    assert_eq!(patched, markers, "every marker (and nothing else) must be patched");

    // A strict decoder loses the whole message; ours does not.
    assert!(StrictEventSequence::decode(&binary[..]).is_err(), "the fixture must really be invalid UTF-8");
    let seq = decode_sequence(binary);

    const BAD: &str = "\u{FFFD}\u{FFFD}";
    assert_eq!(text_checked(&seq.queue), (format!("queue-{BAD}").into(), true));
    assert_eq!(text_checked(&seq.job_set_name), ("set-1".into(), false));
    assert_eq!(text(&seq.user_id), format!("us{BAD}er"));

    let mut repairs = Utf8Repairs::new();
    assert_eq!(repairs.string(&seq.groups[0]), format!("g{BAD}"));
    assert_eq!(repairs.text(&seq.job_set_name), "set-1");
    assert_eq!(repairs.count(), 1);

    let submit = arm!(seq.events[0], SubmitJob);
    assert_eq!(repairs.string(&submit.job_id), format!("job{BAD}"));
    let meta = submit.object_meta.as_ref().unwrap();
    assert_eq!(repairs.string(&meta.namespace), format!("ns{BAD}"));
    assert_eq!(
        text_map(&meta.annotations, &mut repairs),
        BTreeMap::from([(format!("key{BAD}"), format!("value{BAD}"))])
    );
    assert_eq!(text_map(&meta.labels, &mut repairs), BTreeMap::from([("app".to_string(), BAD.to_string())]));
    assert_eq!(repairs.count(), 6);

    let pod = main_pod_spec(submit).decode_pod_spec().expect("view decodes").expect("present");
    assert_eq!(text_checked(or_empty(&pod.priority_class_name)), (format!("pc{BAD}").into(), true));
    let container = &pod.containers[0];
    assert_eq!(text(or_empty(&container.name)), format!("main{BAD}"));
    let requests = &container.resources.as_ref().unwrap().requests;
    assert_eq!(requests[0].key_bytes(), b"cpu\xFF\xFE");
    assert_eq!(requests[0].quantity_bytes(), b"1\xFF\xFE");

    let run_errors = arm!(seq.events[1], JobRunErrors);
    let pod_error = reason!(run_errors.errors[0], PodError);
    assert_eq!(repairs.string(&pod_error.message), format!("failed{BAD}"));
    assert_eq!(repairs.string(&pod_error.node_name), format!("node{BAD}"));
    assert_eq!(repairs.string(&run_errors.errors[0].failure_category), format!("cat{BAD}"));
    assert_eq!(repairs.string(&run_errors.run_id), format!("run{BAD}"));

    let ingress = arm!(seq.events[2], StandaloneIngressInfo);
    assert_eq!(int_text_map(&ingress.ingress_addresses, &mut repairs), BTreeMap::from([(80, format!("http://{BAD}"))]));

    let cancelled = arm!(seq.events[3], CancelledJob);
    assert_eq!(repairs.string(&cancelled.reason), format!("reason{BAD}"));
    assert_eq!(repairs.string(&cancelled.requestor), format!("req{BAD}"));
    assert_eq!(repairs.count(), 13);
}

// ---------------------------------------------------------------------------------------------------------------
// 3. unknown fields and unknown oneof arms (hand-built wire bytes)
// ---------------------------------------------------------------------------------------------------------------

fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(field: u32, wire_type: u8, out: &mut Vec<u8>) {
    put_varint((u64::from(field) << 3) | u64::from(wire_type), out);
}

fn put_len(field: u32, payload: &[u8], out: &mut Vec<u8>) {
    put_key(field, 2, out);
    put_varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

fn put_uint(field: u32, v: u64, out: &mut Vec<u8>) {
    put_key(field, 0, out);
    put_varint(v, out);
}

fn timestamp(seconds: u64) -> Vec<u8> {
    let mut t = Vec::new();
    put_uint(1, seconds, &mut t);
    t
}

/// Unknown fields of every wire type.
fn put_unknowns(out: &mut Vec<u8>) {
    put_uint(90, 5, out);
    put_len(91, b"from the future", out);
    put_key(92, 1, out);
    out.extend_from_slice(&42u64.to_le_bytes());
    put_key(93, 5, out);
    out.extend_from_slice(&7u32.to_le_bytes());
    put_key(94, 3, out); // group start
    put_uint(1, 1, out);
    put_key(94, 4, out); // group end
}

#[test]
fn unknown_fields_and_oneof_arms_are_skipped() {
    let mut binary = protoc_encode("armadaevents.EventSequence", b"queue: \"q\" job_set_name: \"s\"");

    // event 0: known arm, with unknown fields inside the event and inside the arm's message
    let mut running = Vec::new();
    put_len(4, b"job-1", &mut running);
    put_unknowns(&mut running);
    put_len(5, b"run-1", &mut running);
    let mut event = Vec::new();
    put_len(18, &timestamp(1_700_000_200), &mut event);
    put_unknowns(&mut event);
    put_len(12, &running, &mut event);
    put_len(5, &event, &mut binary);

    // event 1: unknown oneof arm 99
    let mut event = Vec::new();
    put_len(18, &timestamp(1_700_000_201), &mut event);
    put_len(99, b"\x0a\x03abc", &mut event);
    put_len(5, &event, &mut binary);

    // event 2: arm 15, unused by Armada
    let mut event = Vec::new();
    put_len(18, &timestamp(1_700_000_202), &mut event);
    put_len(15, b"", &mut event);
    put_len(5, &event, &mut binary);

    // event 3: an Error with an unknown reason arm (19)
    let mut error = Vec::new();
    put_uint(1, 1, &mut error);
    put_len(19, b"\x0a\x01x", &mut error);
    put_len(16, b"cat", &mut error);
    let mut run_errors = Vec::new();
    put_len(3, &error, &mut run_errors);
    put_len(4, b"job-1", &mut run_errors);
    let mut event = Vec::new();
    put_len(14, &run_errors, &mut event);
    put_len(18, &timestamp(1_700_000_203), &mut event);
    put_len(5, &event, &mut binary);

    // event 4: completely empty
    put_len(5, b"", &mut binary);

    // unknown fields at the top level, after the events
    put_unknowns(&mut binary);
    put_len(3, b"user", &mut binary);

    let seq = decode_sequence(binary);
    assert_eq!((s(&seq.queue), s(&seq.job_set_name), s(&seq.user_id)), ("q", "s", "user"));
    assert_eq!(seq.events.len(), 5);

    let created = |i: usize| seq.events[i].created.map(|t| t.seconds);
    assert_eq!(created(0), Some(1_700_000_200));
    let running = arm!(seq.events[0], JobRunRunning);
    assert_eq!((s(&running.job_id), s(&running.run_id)), ("job-1", "run-1"));

    assert_eq!((created(1), &seq.events[1].event), (Some(1_700_000_201), &None));
    assert_eq!((created(2), &seq.events[2].event), (Some(1_700_000_202), &None));

    assert_eq!(created(3), Some(1_700_000_203));
    let run_errors = arm!(seq.events[3], JobRunErrors);
    assert_eq!(run_errors.errors.len(), 1);
    assert!(run_errors.errors[0].terminal);
    assert_eq!(run_errors.errors[0].reason, None);
    assert_eq!(s(&run_errors.errors[0].failure_category), "cat");

    assert_eq!(seq.events[4], ae::Event::default());
}

// ---------------------------------------------------------------------------------------------------------------
// 4. quantities are kept as text
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn quantities_are_kept_unparsed() {
    let binary = protoc_encode(
        "k8s.io.api.core.v1.ResourceRequirements",
        br#"
        requests { key: "cpu" value { string: "not-a-number" } }
        requests { key: "memory" value { string: "" } }
        requests { key: "huge" value { string: "1e400" } }
        requests { key: "neg" value { string: "-5Mi" } }
        requests { key: "absent" }
        requests { key: "cpu" value { string: "250m" } }
        limits { key: "nvidia.com/gpu" value { } }
        "#,
    );
    // protoc (like Go) always writes a map entry's value; append an entry without one by hand.
    let mut binary = binary;
    let mut entry = Vec::new();
    put_len(1, b"no-value", &mut entry);
    put_len(2, &entry, &mut binary);
    let rr = core_v1::ResourceRequirements::decode(&binary[..]).expect("ResourceRequirements decodes");
    assert_eq!(rr.requests.len(), 7);
    assert_eq!(rr.requests[0].quantity_bytes(), b"not-a-number");
    assert_eq!(rr.requests[2].quantity_bytes(), b"1e400");
    assert_eq!(rr.request(b"neg"), Some(&b"-5Mi"[..]));
    assert_eq!(rr.request(b"memory"), Some(&b""[..]));
    assert_eq!(rr.requests[4].value, Some(Default::default()));
    assert_eq!(rr.request(b"absent"), Some(&b""[..]));
    assert_eq!(rr.requests[6].value, None);
    assert_eq!(rr.request(b"no-value"), Some(&b""[..]));
    // A repeated key: the last entry wins, as for a decoded map.
    assert_eq!(rr.request(b"cpu"), Some(&b"250m"[..]));
    assert_eq!(rr.limits[0].value.as_ref().map(|q| q.string.clone()), Some(None));
    assert_eq!(rr.limit(b"nvidia.com/gpu"), Some(&b""[..]));
}
