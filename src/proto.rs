//! Protobuf types generated (by `build.rs`, with prost) from the Armada subset under `proto/`, plus the helpers that
//! read their lenient fields.
//!
//! # Layout
//!
//! One Rust module per proto package, nested the way prost's cross-package paths expect:
//!
//! | proto package                           | Rust module                                   | key types |
//! |-----------------------------------------|-----------------------------------------------|-----------|
//! | `armadaevents`                          | [`armadaevents`]                              | `EventSequence`, `Event` (= `event_sequence::Event`), `EventKind` (= `event_sequence::event::Event`, the oneof), `SubmitJob`, `Error` + `error::Reason`, ... |
//! | `api`                                   | [`api`]                                       | `Job` (what we encode into `job_spec`) |
//! | `k8s.io.api.core.v1`                    | [`k8s::io::api::core::v1`]                    | `PodSpec` (partial view), `Container`, `ResourceRequirements`, `Service` |
//! | `k8s.io.api.networking.v1`              | [`k8s::io::api::networking::v1`]              | `Ingress` |
//! | `k8s.io.apimachinery.pkg.api.resource`  | [`k8s::io::apimachinery::pkg::api::resource`] | `Quantity` |
//! | `k8s.io.apimachinery.pkg.apis.meta.v1`  | [`k8s::io::apimachinery::pkg::apis::meta::v1`]| `ObjectMeta` |
//! | `google.protobuf`                       | `prost_types` (re-exported: [`Timestamp`])    | `Timestamp` |
//!
//! # Representation (why most fields are [`Bytes`])
//!
//! The `.proto` files explain it in full; in short, all wire-compatible with Armada's declarations:
//! - every proto `string` is declared `bytes` (Rust [`Bytes`], or `Option<Bytes>` in the proto2 k8s files), so that
//!   invalid UTF-8 never fails a decode. Read them with [`text`] / [`Utf8Repairs`], which replace invalid sequences
//!   and say so;
//! - every proto map is a `Vec` of `…MapEntry { key, value }` (its wire form). [`text_map`] / [`int_text_map`] turn
//!   them into maps with the "last entry wins" rule of real maps;
//! - sub-messages that are copied verbatim or never inspected are raw [`Bytes`]: `PodSpecWithAvoidList.pod_spec`
//!   (decode the partial view with [`armadaevents::PodSpecWithAvoidList::decode_pod_spec`]), the `ingress` /
//!   `service` / `configMap` arms of `KubernetesObject` (`IngressSpec` / `ServiceSpec` / `ConfigMap`), the
//!   `schedulerobjects` fields, and on the encoding side `api.Job.pod_spec` / `pod_specs` and the `spec` of
//!   `Service` / `Ingress`;
//! - a k8s `Quantity` is kept as its text; nothing parses it during decoding.
//!
//! Decoding from a [`Bytes`] payload makes every such field a slice of the payload (no copy). Converting to owned
//! `String`s before keeping values around avoids pinning the whole payload in memory.

use std::borrow::Cow;
use std::collections::BTreeMap;

pub use prost::bytes::Bytes;
pub use prost_types::Timestamp;

/// `armadaevents` (Armada's `pkg/armadaevents/events.proto`): the events on the job-set topic.
#[allow(missing_docs, clippy::all)]
pub mod armadaevents {
    include!(concat!(env!("OUT_DIR"), "/armadaevents.rs"));

    /// One event of an [`EventSequence`] (`created` plus the oneof).
    pub use self::event_sequence::Event;
    /// The oneof of an [`Event`]. `Event.event == None` means no arm was set, or an arm this build does not know.
    pub use self::event_sequence::event::Event as EventKind;
}

/// `api` (Armada's `pkg/api/submit.proto`): `Job`, re-encoded into Lookout's `job_spec`.
#[allow(missing_docs, clippy::all)]
pub mod api {
    include!(concat!(env!("OUT_DIR"), "/api.rs"));
}

/// The k8s packages, nested as `k8s.io.…` so that prost's relative paths between packages resolve.
#[allow(missing_docs, clippy::all)]
pub mod k8s {
    pub mod io {
        pub mod api {
            pub mod core {
                pub mod v1 {
                    include!(concat!(env!("OUT_DIR"), "/k8s.io.api.core.v1.rs"));
                }
            }
            pub mod networking {
                pub mod v1 {
                    include!(concat!(env!("OUT_DIR"), "/k8s.io.api.networking.v1.rs"));
                }
            }
        }
        pub mod apimachinery {
            pub mod pkg {
                pub mod api {
                    pub mod resource {
                        include!(concat!(env!("OUT_DIR"), "/k8s.io.apimachinery.pkg.api.resource.rs"));
                    }
                }
                pub mod apis {
                    pub mod meta {
                        pub mod v1 {
                            include!(concat!(env!("OUT_DIR"), "/k8s.io.apimachinery.pkg.apis.meta.v1.rs"));
                        }
                    }
                }
            }
        }
    }
}

use k8s::io::api::core::v1 as core_v1;
use k8s::io::apimachinery::pkg::api::resource::Quantity;
use k8s::io::apimachinery::pkg::apis::meta::v1 as meta_v1;

// ---------------------------------------------------------------------------------------------------------------
// Text from `bytes`-declared strings
// ---------------------------------------------------------------------------------------------------------------

/// The text of a proto string field declared `bytes`. Invalid UTF-8 sequences become U+FFFD. Borrowed (no
/// allocation) when the bytes are valid UTF-8. Note: valid UTF-8 may still contain NUL, which Postgres `text`
/// rejects; that is the writer's concern.
pub fn text(bytes: &[u8]) -> Cow<'_, str> {
    text_checked(bytes).0
}

/// Like [`text`], and also whether the bytes were not valid UTF-8 (so something was replaced).
pub fn text_checked(bytes: &[u8]) -> (Cow<'_, str>, bool) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (Cow::Borrowed(s), false),
        Err(_) => (String::from_utf8_lossy(bytes), true),
    }
}

/// The bytes of a proto2 `optional bytes` field; absent reads as empty.
pub fn or_empty(field: &Option<Bytes>) -> &[u8] {
    field.as_deref().unwrap_or_default()
}

/// Converts `bytes`-declared strings to text like [`text`] and counts the fields that had invalid UTF-8, so the caller
/// can report them (e.g. one counter per message).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Utf8Repairs {
    count: u64,
}

impl Utf8Repairs {
    pub fn new() -> Self {
        Self::default()
    }

    /// [`text`], counting a repair when the bytes were not valid UTF-8.
    pub fn text<'a>(&mut self, bytes: &'a [u8]) -> Cow<'a, str> {
        let (value, repaired) = text_checked(bytes);
        self.count += u64::from(repaired);
        value
    }

    /// [`Self::text`] as an owned `String`.
    pub fn string(&mut self, bytes: &[u8]) -> String {
        self.text(bytes).into_owned()
    }

    /// Number of fields repaired so far.
    pub fn count(&self) -> u64 {
        self.count
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Maps modelled as repeated entries
// ---------------------------------------------------------------------------------------------------------------

/// An entry of a proto `map<string, string>` modelled as `repeated …MapEntry` (see the module docs).
pub trait StringEntry {
    fn key_bytes(&self) -> &[u8];
    fn value_bytes(&self) -> &[u8];
}

impl StringEntry for armadaevents::StringMapEntry {
    fn key_bytes(&self) -> &[u8] {
        &self.key
    }
    fn value_bytes(&self) -> &[u8] {
        &self.value
    }
}

impl StringEntry for api::StringMapEntry {
    fn key_bytes(&self) -> &[u8] {
        &self.key
    }
    fn value_bytes(&self) -> &[u8] {
        &self.value
    }
}

impl StringEntry for meta_v1::StringMapEntry {
    fn key_bytes(&self) -> &[u8] {
        or_empty(&self.key)
    }
    fn value_bytes(&self) -> &[u8] {
        or_empty(&self.value)
    }
}

/// The map a list of entries stands for: text keys and values (repairs counted), the last entry winning on a repeated
/// key, as when a real proto map is decoded.
pub fn text_map<E: StringEntry>(entries: &[E], repairs: &mut Utf8Repairs) -> BTreeMap<String, String> {
    entries.iter().map(|e| (repairs.string(e.key_bytes()), repairs.string(e.value_bytes()))).collect()
}

/// [`text_map`] for a `map<int32, string>` (ingress addresses).
pub fn int_text_map(entries: &[armadaevents::Int32StringMapEntry], repairs: &mut Utf8Repairs) -> BTreeMap<i32, String> {
    entries.iter().map(|e| (e.key, repairs.string(&e.value))).collect()
}

impl armadaevents::StringMapEntry {
    pub fn new(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Self { key: key.into(), value: value.into() }
    }
}

impl api::StringMapEntry {
    pub fn new(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Self { key: key.into(), value: value.into() }
    }
}

impl meta_v1::StringMapEntry {
    pub fn new(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Self { key: Some(key.into()), value: Some(value.into()) }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Quantities and resources
// ---------------------------------------------------------------------------------------------------------------

impl Quantity {
    pub fn new(value: impl Into<Bytes>) -> Self {
        Self { string: Some(value.into()) }
    }

    /// The quantity's text as sent (unparsed, maybe not even UTF-8); absent reads as empty.
    pub fn as_bytes(&self) -> &[u8] {
        or_empty(&self.string)
    }
}

impl core_v1::QuantityMapEntry {
    pub fn new(key: impl Into<Bytes>, quantity: impl Into<Bytes>) -> Self {
        Self { key: Some(key.into()), value: Some(Quantity::new(quantity)) }
    }

    pub fn key_bytes(&self) -> &[u8] {
        or_empty(&self.key)
    }

    /// The quantity text; a missing value reads as empty.
    pub fn quantity_bytes(&self) -> &[u8] {
        self.value.as_ref().map(Quantity::as_bytes).unwrap_or_default()
    }
}

/// Looks a resource up in a `ResourceList` (last entry wins).
fn lookup<'a>(list: &'a [core_v1::QuantityMapEntry], name: &[u8]) -> Option<&'a [u8]> {
    list.iter().rev().find(|e| e.key_bytes() == name).map(core_v1::QuantityMapEntry::quantity_bytes)
}

impl core_v1::ResourceRequirements {
    /// The requested quantity text for a resource (e.g. `b"cpu"`), if present.
    pub fn request(&self, name: &[u8]) -> Option<&[u8]> {
        lookup(&self.requests, name)
    }

    /// The limit quantity text for a resource, if present.
    pub fn limit(&self, name: &[u8]) -> Option<&[u8]> {
        lookup(&self.limits, name)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Raw pod specs
// ---------------------------------------------------------------------------------------------------------------

impl armadaevents::PodSpecWithAvoidList {
    /// Decodes the partial [`core_v1::PodSpec`] view from the raw pod spec. `Ok(None)` when the pod spec is absent.
    /// Fails only on malformed protobuf inside the pod spec (never on text content); the raw bytes stay usable.
    pub fn decode_pod_spec(&self) -> Result<Option<core_v1::PodSpec>, prost::DecodeError> {
        self.pod_spec.as_ref().map(|raw| <core_v1::PodSpec as prost::Message>::decode(raw.clone())).transpose()
    }
}
