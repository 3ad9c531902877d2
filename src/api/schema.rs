//! Schema helpers for fields fledge passes through to Istio untouched.

use schemars::{Schema, SchemaGenerator, json_schema};

/// An object kept as written (Istio's own CRDs validate it when fledge writes it).
pub fn preserve_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

/// A list of objects kept as written (Istio `match` blocks).
pub fn preserve_object_list(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
    })
}

/// Any JSON value: the policy's own configuration.
pub fn preserve_any(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"x-kubernetes-preserve-unknown-fields": true})
}

/// An integer or a string (a port name).
pub fn int_or_string(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"x-kubernetes-int-or-string": true})
}
