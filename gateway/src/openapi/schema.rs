//! The schemas of the API description: protobuf messages and enums as JSON Schema, written as
//! the gateway writes JSON (proto field names, 64-bit integers as numbers, enums by name,
//! well-known types in their proto3 JSON forms), the shared error body, and the comments of the
//! descriptors' source info that become descriptions.

use std::collections::{BTreeMap, HashMap};

use prost_reflect::{DescriptorPool, EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use crate::reply;

// ---- Comments ------------------------------------------------------------------------------

/// The leading (else trailing) comment of every element that has one, by file and source path.
pub(super) struct Comments(HashMap<(String, Vec<i32>), String>);

impl Comments {
    /// Empty when the descriptors carry no source info (then nothing has a description).
    pub(super) fn of(pool: &DescriptorPool) -> Comments {
        let mut found = HashMap::new();
        for file in pool.files() {
            let Some(info) = &file.file_descriptor_proto().source_code_info else {
                continue;
            };
            for location in &info.location {
                let text = location
                    .leading_comments
                    .as_deref()
                    .or(location.trailing_comments.as_deref())
                    .map(tidy_comment)
                    .unwrap_or_default();
                if !text.is_empty() {
                    found.insert((file.name().to_owned(), location.path.clone()), text);
                }
            }
        }
        Comments(found)
    }

    pub(super) fn get(&self, file: &str, path: &[i32]) -> Option<&str> {
        self.0.get(&(file.to_owned(), path.to_vec())).map(String::as_str)
    }

    pub(super) fn field(&self, f: &FieldDescriptor) -> Option<&str> {
        self.get(f.parent_file().name(), f.path())
    }
}

/// A comment's lines joined into sentences; a blank line stays a paragraph break.
pub(super) fn tidy_comment(raw: &str) -> String {
    raw.split("\n\n")
        .map(|para| {
            para.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n")
}

// ---- Schemas -------------------------------------------------------------------------------

/// The message and enum schemas referred to so far, by full proto name.
pub(super) struct Schemas<'a> {
    pub(super) comments: &'a Comments,
    pub(super) found: BTreeMap<String, Value>,
}

pub(super) fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

impl Schemas<'_> {
    /// A reference to the message's schema, adding it (and what it refers to) on first use.
    pub(super) fn message_ref(&mut self, m: &MessageDescriptor) -> Value {
        if let Some(known) = well_known(m) {
            return known;
        }
        let name = m.full_name().to_owned();
        if !self.found.contains_key(&name) {
            // A placeholder first, so a message that contains itself refers to itself.
            self.found.insert(name.clone(), Value::Null);
            let schema = self.object(m, &[]);
            self.found.insert(name.clone(), schema);
        }
        reference(&name)
    }

    pub(super) fn enum_ref(&mut self, e: &EnumDescriptor) -> Value {
        let name = e.full_name().to_owned();
        if !self.found.contains_key(&name) {
            let mut schema = json!({
                "type": "string",
                "enum": e.values().map(|v| v.name().to_owned()).collect::<Vec<_>>(),
            });
            if let Some(text) = self.comments.get(e.parent_file().name(), e.path()) {
                schema["description"] = json!(text);
            }
            self.found.insert(name.clone(), schema);
        }
        reference(&name)
    }

    /// The message as an object schema, without the fields named in `skip` (those the path, a
    /// header or the raw body bind). Unknown fields are refused, hence no additional properties.
    pub(super) fn object(&mut self, m: &MessageDescriptor, skip: &[&str]) -> Value {
        let mut properties = Map::new();
        for f in m.fields().filter(|f| !skip.contains(&f.name())) {
            properties.insert(f.name().to_owned(), self.field(&f));
        }
        let mut schema = json!({
            "type": "object",
            "properties": properties,
            "additionalProperties": false,
        });
        if let Some(text) = self.comments.get(m.parent_file().name(), m.path()) {
            schema["description"] = json!(text);
        }
        schema
    }

    /// A field's schema: its value, in an array when repeated, in an object when a map, with
    /// its comment (and whether it may be left out) as the description.
    pub(super) fn field(&mut self, f: &FieldDescriptor) -> Value {
        let mut schema = if f.is_map() {
            let value = match f.kind() {
                Kind::Message(entry) => self.value(&entry.map_entry_value_field().kind()),
                other => self.value(&other),
            };
            json!({ "type": "object", "additionalProperties": value })
        } else if f.is_list() {
            json!({ "type": "array", "items": self.value(&f.kind()) })
        } else {
            self.value(&f.kind())
        };
        let mut notes: Vec<&str> = self.comments.field(f).into_iter().collect();
        if f.supports_presence() && !matches!(f.kind(), Kind::Message(_)) {
            notes.push(
                "Optional (proto3 `optional`): leaving it out is not the same as sending its zero value.",
            );
        }
        if !notes.is_empty()
            && let Some(object) = schema.as_object_mut()
        {
            object.insert("description".to_owned(), json!(notes.join(" ")));
        }
        schema
    }

    /// One value of a kind, as the gateway writes it.
    pub(super) fn value(&mut self, kind: &Kind) -> Value {
        match kind {
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => json!({"type": "integer", "format": "int64"}),
            Kind::Uint64 | Kind::Fixed64 => json!({"type": "integer", "format": "int64", "minimum": 0}),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => json!({"type": "integer", "format": "int32"}),
            Kind::Uint32 | Kind::Fixed32 => {
                json!({"type": "integer", "minimum": 0, "maximum": u32::MAX})
            }
            Kind::Double => json!({"type": "number", "format": "double"}),
            Kind::Float => json!({"type": "number", "format": "float"}),
            Kind::Bool => json!({"type": "boolean"}),
            Kind::String => json!({"type": "string"}),
            Kind::Bytes => bytes_schema(),
            Kind::Enum(e) => self.enum_ref(e),
            Kind::Message(m) => self.message_ref(m),
        }
    }
}

pub(super) fn bytes_schema() -> Value {
    json!({"type": "string", "format": "byte", "contentEncoding": "base64"})
}

/// The well-known types, written in their proto3 JSON forms rather than as their fields.
pub(super) fn well_known(m: &MessageDescriptor) -> Option<Value> {
    let schema = match m.full_name() {
        "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
        "google.protobuf.Duration" => {
            json!({"type": "string", "description": "Seconds with an `s` suffix, e.g. \"1.5s\"."})
        }
        "google.protobuf.FieldMask" => {
            json!({"type": "string", "description": "Comma-separated field paths."})
        }
        "google.protobuf.Empty" => json!({"type": "object", "additionalProperties": false}),
        "google.protobuf.Struct" | "google.protobuf.Any" => json!({"type": "object"}),
        "google.protobuf.ListValue" => json!({"type": "array"}),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.Int64Value" => json!({"type": ["integer", "null"], "format": "int64"}),
        "google.protobuf.UInt64Value" => {
            json!({"type": ["integer", "null"], "format": "int64", "minimum": 0})
        }
        "google.protobuf.Int32Value" => json!({"type": ["integer", "null"], "format": "int32"}),
        "google.protobuf.UInt32Value" => json!({"type": ["integer", "null"], "minimum": 0}),
        "google.protobuf.DoubleValue" | "google.protobuf.FloatValue" => json!({"type": ["number", "null"]}),
        "google.protobuf.BoolValue" => json!({"type": ["boolean", "null"]}),
        "google.protobuf.StringValue" => json!({"type": ["string", "null"]}),
        "google.protobuf.BytesValue" => {
            json!({"type": ["string", "null"], "format": "byte", "contentEncoding": "base64"})
        }
        _ => return None,
    };
    Some(schema)
}

/// `{"error": ..., "code": ...}`, the body of every error (`reply::error_body`).
pub(super) fn error_schema() -> Value {
    let codes: Vec<&str> = (0..=16)
        .map(|n| reply::code_name(tonic::Code::from_i32(n)))
        .collect();
    json!({
        "type": "object",
        "description": "Every error's body: a sentence for people, and the gRPC code name for \
                        programs (the gateway's own refusals use the code that fits them).",
        "required": ["error", "code"],
        "properties": {
            "error": {"type": "string", "description": "What went wrong, as a sentence."},
            "code": {"type": "string", "enum": codes},
        },
        "additionalProperties": false,
    })
}
