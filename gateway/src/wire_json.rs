//! A service's reply, from protobuf wire bytes straight to JSON by its descriptor, in one pass
//! and without building a message: the JSON is byte for byte what `transcode::response` writes
//! from a decoded `DynamicMessage` (proto field names, 64-bit integers as numbers, every field
//! without presence written even at its default, fields in number order, timestamps in RFC
//! 3339).
//!
//! It handles what the shop's replies are made of: integers, booleans, strings, enums, nested
//! messages, repeated fields (packed or not), `google.protobuf.Timestamp` and `Empty`. Anything
//! else, and anything it cannot vouch for (bytes that would not decode, a wire type that does
//! not match the field, a message field sent twice, which would have to be merged), answers
//! [`Slow`]: the caller then decodes and serialises the usual way, which also produces the
//! error when the bytes are bad. So this path never accepts what the decoder would refuse.

use std::io::Write;

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};

/// The reply needs the general path (see the module comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slow;

/// Nesting deeper than this goes the general way (which has its own limit).
const MAX_DEPTH: usize = 32;

/// Seconds of 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z: the range JSON timestamps have.
const MIN_TIMESTAMP_SECONDS: i64 = -62_135_596_800;
const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;

/// One field value as it arrived on the wire.
#[derive(Debug, Clone, Copy)]
enum Raw<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

/// The JSON for the message `desc` whose encoding is `wire`.
pub fn encode(desc: &MessageDescriptor, wire: &[u8]) -> Result<Vec<u8>, Slow> {
    let mut out = Vec::with_capacity(wire.len() * 2 + 64);
    message(desc, wire, &mut out, 0)?;
    Ok(out)
}

fn message(desc: &MessageDescriptor, wire: &[u8], out: &mut Vec<u8>, depth: usize) -> Result<(), Slow> {
    if depth > MAX_DEPTH {
        return Err(Slow);
    }
    if desc.full_name() == "google.protobuf.Timestamp" {
        return timestamp(wire, out);
    }
    if desc.full_name().starts_with("google.protobuf.") && desc.full_name() != "google.protobuf.Empty" {
        return Err(Slow);
    }
    let seen = fields(wire)?;
    out.push(b'{');
    let mut first = true;
    for field in desc.fields() {
        let number = field.number();
        let sent = |n: u32| seen.iter().any(|(m, _)| *m == n);
        let mut values = seen.iter().filter(|(n, _)| *n == number).map(|(_, v)| *v);
        if field.is_map() {
            if sent(number) {
                return Err(Slow);
            }
            key(out, &mut first, &field);
            out.extend_from_slice(b"{}");
            continue;
        }
        // Two members of one oneof sent: the last clears the other, which takes the general path.
        if sent(number)
            && let Some(oneof) = field.containing_oneof()
            && oneof
                .fields()
                .any(|other| other.number() != number && sent(other.number()))
        {
            return Err(Slow);
        }
        if field.is_list() {
            key(out, &mut first, &field);
            list(&field, values, out, depth)?;
            continue;
        }
        let value = if matches!(field.kind(), Kind::Message(_)) {
            let one = values.next();
            if values.next().is_some() {
                return Err(Slow); // sent twice: the decoder would merge the two
            }
            one
        } else {
            values.next_back()
        };
        match value {
            Some(v) => {
                key(out, &mut first, &field);
                single(&field.kind(), v, out, depth)?;
            }
            None if field.supports_presence() => {}
            None => {
                key(out, &mut first, &field);
                default(&field.kind(), out)?;
            }
        }
    }
    out.push(b'}');
    Ok(())
}

/// Every field on the wire, in order, as (number, value); unknown numbers included (the
/// encoder skips them, as the serialiser does).
fn fields(mut wire: &[u8]) -> Result<Vec<(u32, Raw<'_>)>, Slow> {
    let mut seen = Vec::new();
    while !wire.is_empty() {
        let tag = varint(&mut wire)?;
        let number = u32::try_from(tag >> 3).map_err(|_| Slow)?;
        if number == 0 {
            return Err(Slow);
        }
        let raw = match tag & 7 {
            0 => Raw::Varint(varint(&mut wire)?),
            1 => Raw::Fixed64(u64::from_le_bytes(
                take(&mut wire, 8)?.try_into().map_err(|_| Slow)?,
            )),
            2 => {
                let len = usize::try_from(varint(&mut wire)?).map_err(|_| Slow)?;
                Raw::Bytes(take(&mut wire, len)?)
            }
            5 => Raw::Fixed32(u32::from_le_bytes(
                take(&mut wire, 4)?.try_into().map_err(|_| Slow)?,
            )),
            _ => return Err(Slow), // groups, or not a wire type
        };
        seen.push((number, raw));
    }
    Ok(seen)
}

fn take<'a>(wire: &mut &'a [u8], n: usize) -> Result<&'a [u8], Slow> {
    if wire.len() < n {
        return Err(Slow);
    }
    let (head, rest) = wire.split_at(n);
    *wire = rest;
    Ok(head)
}

fn varint(wire: &mut &[u8]) -> Result<u64, Slow> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&byte, rest) = wire.split_first().ok_or(Slow)?;
        *wire = rest;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Ok(value);
        }
    }
    Err(Slow)
}

fn key(out: &mut Vec<u8>, first: &mut bool, field: &FieldDescriptor) {
    if !*first {
        out.push(b',');
    }
    *first = false;
    out.push(b'"');
    out.extend_from_slice(field.name().as_bytes());
    out.extend_from_slice(b"\":");
}

fn list<'a>(
    field: &FieldDescriptor,
    values: impl Iterator<Item = Raw<'a>>,
    out: &mut Vec<u8>,
    depth: usize,
) -> Result<(), Slow> {
    let kind = field.kind();
    let packable = !matches!(kind, Kind::String | Kind::Bytes | Kind::Message(_));
    out.push(b'[');
    let mut first = true;
    let mut item = |v: Raw<'_>, out: &mut Vec<u8>| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
        single(&kind, v, out, depth)
    };
    for v in values {
        match v {
            Raw::Bytes(mut packed) if packable => {
                while !packed.is_empty() {
                    let one = match kind {
                        Kind::Fixed64 | Kind::Sfixed64 | Kind::Double => Raw::Fixed64(u64::from_le_bytes(
                            take(&mut packed, 8)?.try_into().map_err(|_| Slow)?,
                        )),
                        Kind::Fixed32 | Kind::Sfixed32 | Kind::Float => Raw::Fixed32(u32::from_le_bytes(
                            take(&mut packed, 4)?.try_into().map_err(|_| Slow)?,
                        )),
                        _ => Raw::Varint(varint(&mut packed)?),
                    };
                    item(one, out)?;
                }
            }
            other => item(other, out)?,
        }
    }
    out.push(b']');
    Ok(())
}

/// One value of `kind`; a wire type that does not fit the kind is [`Slow`].
fn single(kind: &Kind, raw: Raw<'_>, out: &mut Vec<u8>, depth: usize) -> Result<(), Slow> {
    // Integer conversions as protobuf decoding does them: truncating for 32-bit kinds.
    #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
    let written = match (kind, raw) {
        (Kind::Int32, Raw::Varint(v)) => write!(out, "{}", v as i32),
        (Kind::Int64, Raw::Varint(v)) => write!(out, "{}", v as i64),
        (Kind::Uint32, Raw::Varint(v)) => write!(out, "{}", v as u32),
        (Kind::Uint64, Raw::Varint(v)) => write!(out, "{v}"),
        (Kind::Sint32, Raw::Varint(v)) => {
            let v = v as u32;
            write!(out, "{}", ((v >> 1) as i32) ^ -((v & 1) as i32))
        }
        (Kind::Sint64, Raw::Varint(v)) => write!(out, "{}", ((v >> 1) as i64) ^ -((v & 1) as i64)),
        (Kind::Fixed32, Raw::Fixed32(v)) => write!(out, "{v}"),
        (Kind::Sfixed32, Raw::Fixed32(v)) => write!(out, "{}", v as i32),
        (Kind::Fixed64, Raw::Fixed64(v)) => write!(out, "{v}"),
        (Kind::Sfixed64, Raw::Fixed64(v)) => write!(out, "{}", v as i64),
        (Kind::Bool, Raw::Varint(v)) => write!(out, "{}", v != 0),
        (Kind::Enum(e), _) if e.full_name() == "google.protobuf.NullValue" => return Err(Slow),
        (Kind::Enum(e), Raw::Varint(v)) => match e.get_value(v as i32) {
            Some(named) => return string(named.name().as_bytes(), out),
            None => write!(out, "{}", v as i32),
        },
        (Kind::String, Raw::Bytes(b)) => return string(b, out),
        (Kind::Message(m), Raw::Bytes(b)) => return message(m, b, out, depth + 1),
        _ => return Err(Slow),
    };
    written.map_err(|_| Slow)
}

/// A field without presence that was not sent: its default.
fn default(kind: &Kind, out: &mut Vec<u8>) -> Result<(), Slow> {
    match kind {
        Kind::Int32
        | Kind::Int64
        | Kind::Uint32
        | Kind::Uint64
        | Kind::Sint32
        | Kind::Sint64
        | Kind::Fixed32
        | Kind::Sfixed32
        | Kind::Fixed64
        | Kind::Sfixed64 => out.push(b'0'),
        Kind::Bool => out.extend_from_slice(b"false"),
        Kind::String | Kind::Bytes => out.extend_from_slice(b"\"\""),
        // As serde_json writes a zero float.
        Kind::Double | Kind::Float => out.extend_from_slice(b"0.0"),
        #[allow(clippy::cast_sign_loss)]
        Kind::Enum(e) => single(
            kind,
            Raw::Varint(u64::from(e.default_value().number() as u32)),
            out,
            0,
        )?,
        _ => return Err(Slow),
    }
    Ok(())
}

/// A JSON string, escaped the way serde_json escapes it; bytes that are not UTF-8 are
/// [`Slow`] (the decoder refuses them).
fn string(bytes: &[u8], out: &mut Vec<u8>) -> Result<(), Slow> {
    let text = std::str::from_utf8(bytes).map_err(|_| Slow)?;
    serde_json::to_writer(out, text).map_err(|_| Slow)
}

/// `google.protobuf.Timestamp` as RFC 3339 in UTC, with 0, 3, 6 or 9 fraction digits.
fn timestamp(wire: &[u8], out: &mut Vec<u8>) -> Result<(), Slow> {
    let (mut seconds, mut nanos) = (0i64, 0i32);
    for (number, raw) in fields(wire)? {
        #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
        match (number, raw) {
            (1, Raw::Varint(v)) => seconds = v as i64,
            (2, Raw::Varint(v)) => nanos = v as i32,
            (1 | 2, _) => return Err(Slow),
            _ => {}
        }
    }
    if !(MIN_TIMESTAMP_SECONDS..=MAX_TIMESTAMP_SECONDS).contains(&seconds)
        || !(0..1_000_000_000).contains(&nanos)
    {
        return Err(Slow);
    }
    let days = seconds.div_euclid(86_400);
    let rest = seconds.rem_euclid(86_400);
    let (y, m, d) = shop_base::logs::civil(days);
    let fraction = match nanos {
        0 => String::new(),
        n if n % 1_000_000 == 0 => format!(".{:03}", n / 1_000_000),
        n if n % 1_000 == 0 => format!(".{:06}", n / 1_000),
        n => format!(".{n:09}"),
    };
    write!(
        out,
        "\"{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{fraction}Z\"",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
    .map_err(|_| Slow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;
    use prost_reflect::prost_types::field_descriptor_proto::{Label, Type};
    use prost_reflect::prost_types::{
        DescriptorProto, EnumDescriptorProto, EnumValueDescriptorProto, FieldDescriptorProto,
        FileDescriptorProto, MessageOptions, OneofDescriptorProto,
    };
    use prost_reflect::{DescriptorPool, DynamicMessage, Value};

    /// The shop's descriptors plus `t.Kinds`, a message with a field of every kind.
    fn pool() -> DescriptorPool {
        let mut pool = DescriptorPool::decode(shop_proto::FILE_DESCRIPTOR_SET).unwrap();
        let field =
            |name: &str, number: i32, ty: Type, label: Label, type_name: Option<&str>| FieldDescriptorProto {
                name: Some(name.into()),
                number: Some(number),
                r#type: Some(ty as i32),
                label: Some(label as i32),
                type_name: type_name.map(Into::into),
                ..Default::default()
            };
        let (one, many) = (Label::Optional, Label::Repeated);
        let mut fields = vec![
            field("i32", 1, Type::Int32, one, None),
            field("i64", 2, Type::Int64, one, None),
            field("u32", 3, Type::Uint32, one, None),
            field("u64", 4, Type::Uint64, one, None),
            field("s32", 5, Type::Sint32, one, None),
            field("s64", 6, Type::Sint64, one, None),
            field("f32", 7, Type::Fixed32, one, None),
            field("sf32", 8, Type::Sfixed32, one, None),
            field("f64", 9, Type::Fixed64, one, None),
            field("sf64", 10, Type::Sfixed64, one, None),
            field("flag", 11, Type::Bool, one, None),
            field("text", 12, Type::String, one, None),
            field("data", 13, Type::Bytes, one, None),
            field("real", 14, Type::Double, one, None),
            field("colour", 15, Type::Enum, one, Some(".t.Colour")),
            field("child", 16, Type::Message, one, Some(".t.Kinds")),
            field("at", 17, Type::Message, one, Some(".google.protobuf.Timestamp")),
            field("ints", 18, Type::Int32, many, None),
            field("zigs", 19, Type::Sint64, many, None),
            field("texts", 20, Type::String, many, None),
            field("children", 21, Type::Message, many, Some(".t.Kinds")),
            field("colours", 22, Type::Enum, many, Some(".t.Colour")),
            field("counts", 23, Type::Message, many, Some(".t.Kinds.CountsEntry")),
            field("maybe", 24, Type::Int32, one, None),
            field("either_a", 25, Type::String, one, None),
            field("either_b", 26, Type::Int64, one, None),
        ];
        fields[23].proto3_optional = Some(true);
        fields[23].oneof_index = Some(0);
        fields[24].oneof_index = Some(1);
        fields[25].oneof_index = Some(1);
        let entry = DescriptorProto {
            name: Some("CountsEntry".into()),
            field: vec![
                field("key", 1, Type::String, one, None),
                field("value", 2, Type::Int32, one, None),
            ],
            options: Some(MessageOptions {
                map_entry: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let oneof = |name: &str| OneofDescriptorProto {
            name: Some(name.into()),
            ..Default::default()
        };
        let value = |name: &str, number: i32| EnumValueDescriptorProto {
            name: Some(name.into()),
            number: Some(number),
            ..Default::default()
        };
        let file = FileDescriptorProto {
            name: Some("t/kinds.proto".into()),
            package: Some("t".into()),
            dependency: vec!["google/protobuf/timestamp.proto".into()],
            syntax: Some("proto3".into()),
            message_type: vec![DescriptorProto {
                name: Some("Kinds".into()),
                field: fields,
                nested_type: vec![entry],
                oneof_decl: vec![oneof("_maybe"), oneof("either")],
                ..Default::default()
            }],
            enum_type: vec![EnumDescriptorProto {
                name: Some("Colour".into()),
                value: vec![value("RED", 0), value("GREEN", 1), value("BLUE", 2)],
                ..Default::default()
            }],
            ..Default::default()
        };
        pool.add_file_descriptor_proto(file).unwrap();
        pool
    }

    /// A small deterministic generator (xorshift).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn pick<T: Copy>(&mut self, from: &[T]) -> T {
            from[self.below(from.len() as u64) as usize]
        }
    }

    const INTS: &[i64] = &[
        0,
        1,
        -1,
        7,
        300,
        -300,
        i32::MAX as i64,
        i32::MIN as i64,
        i64::MAX,
        i64::MIN,
        1 << 40,
    ];
    const TEXTS: &[&str] = &[
        "",
        "lamp",
        "é 中文 🛒",
        "quote \" slash \\ line\n tab\t bell\u{7} nul\u{0}",
        "</script>",
    ];

    fn value(rng: &mut Rng, field: &FieldDescriptor, kind: &Kind, depth: usize) -> Value {
        let n = rng.pick(INTS);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        match kind {
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(n as i32),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(n),
            Kind::Uint32 | Kind::Fixed32 => Value::U32(n as u32),
            Kind::Uint64 | Kind::Fixed64 => Value::U64(n as u64),
            Kind::Bool => Value::Bool(n % 2 == 1),
            Kind::String => Value::String(rng.pick(TEXTS).to_owned()),
            Kind::Bytes => Value::Bytes(prost::bytes::Bytes::from_static(b"\x00\xffbytes")),
            Kind::Double => Value::F64(n as f64 / 3.0),
            Kind::Float => Value::F32(n as f32 / 3.0),
            Kind::Enum(_) => Value::EnumNumber(rng.pick(&[0, 1, 2, 9])),
            Kind::Message(m) if m.full_name() == "google.protobuf.Timestamp" => {
                let mut t = DynamicMessage::new(m.clone());
                let seconds = rng.pick(&[
                    0,
                    1_764_400_000,
                    -1,
                    MIN_TIMESTAMP_SECONDS,
                    MAX_TIMESTAMP_SECONDS,
                    951_782_400,
                ]);
                let nanos = rng.pick(&[0, 5_000_000, 123_456_000, 1, 999_999_999]);
                t.set_field_by_name("seconds", Value::I64(seconds));
                t.set_field_by_name("nanos", Value::I32(nanos));
                Value::Message(t)
            }
            Kind::Message(m) if field.is_map() => {
                let _ = m;
                let mut map = std::collections::HashMap::new();
                map.insert(prost_reflect::MapKey::String("k".into()), Value::I32(n as i32));
                Value::Map(map)
            }
            Kind::Message(m) => Value::Message(random(rng, m, depth + 1)),
        }
    }

    fn random(rng: &mut Rng, desc: &MessageDescriptor, depth: usize) -> DynamicMessage {
        let mut msg = DynamicMessage::new(desc.clone());
        for field in desc.fields() {
            if rng.below(10) < 3 || (depth > 2 && matches!(field.kind(), Kind::Message(_))) {
                continue;
            }
            let kind = field.kind();
            let v = if field.is_list() {
                Value::List(
                    (0..rng.below(4))
                        .map(|_| value(rng, &field, &kind, depth))
                        .collect(),
                )
            } else {
                value(rng, &field, &kind, depth)
            };
            msg.set_field(&field, v);
        }
        msg
    }

    /// What the general path writes for `wire`, or why it refuses.
    fn slow(desc: &MessageDescriptor, wire: &[u8]) -> Result<Vec<u8>, String> {
        let msg = DynamicMessage::decode(desc.clone(), wire).map_err(|e| e.to_string())?;
        crate::transcode::response(&msg).map(|b| b.to_vec())
    }

    fn supported(desc: &MessageDescriptor) -> bool {
        desc.package_name().starts_with("shop.")
    }

    /// The shop's messages a reply can hold: every RPC's output and the messages inside it.
    /// (Requests may have what replies have not, e.g. the raw body of a webhook as `bytes`.)
    fn reply_messages(pool: &DescriptorPool) -> std::collections::BTreeSet<String> {
        let mut seen = std::collections::BTreeSet::new();
        let mut todo: Vec<MessageDescriptor> = pool
            .services()
            .flat_map(|s| s.methods().map(|m| m.output()).collect::<Vec<_>>())
            .filter(supported)
            .collect();
        while let Some(m) = todo.pop() {
            if seen.insert(m.full_name().to_owned()) {
                todo.extend(m.fields().filter_map(|f| match f.kind() {
                    Kind::Message(inner) if supported(&inner) => Some(inner),
                    _ => None,
                }));
            }
        }
        seen
    }

    #[test]
    fn writes_exactly_what_the_general_path_writes() {
        let pool = pool();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let replies = reply_messages(&pool);
        let mut fast = 0;
        for desc in pool
            .all_messages()
            .filter(|m| m.package_name() == "t" || supported(m))
        {
            for _ in 0..300 {
                let wire = random(&mut rng, &desc, 0).encode_to_vec();
                let general = slow(&desc, &wire);
                match encode(&desc, &wire) {
                    Ok(json) => {
                        fast += 1;
                        assert_eq!(
                            Ok(String::from_utf8(json).unwrap()),
                            general.map(|b| String::from_utf8(b).unwrap()),
                            "{}",
                            desc.full_name()
                        );
                    }
                    // The shop's own replies never need the general path.
                    Err(Slow) => assert!(
                        !replies.contains(desc.full_name()),
                        "{} fell back: {general:?}",
                        desc.full_name()
                    ),
                }
            }
        }
        assert!(fast > 5_000, "only {fast} went the direct way");
    }

    #[test]
    fn every_kind_it_handles_goes_the_direct_way() {
        let pool = pool();
        let desc = pool.get_message_by_name("t.Kinds").unwrap();
        let mut rng = Rng(7);
        for _ in 0..2_000 {
            let mut msg = random(&mut rng, &desc, 0);
            // What it leaves to the general path: bytes, floats, filled maps, a second oneof member.
            for name in ["data", "real", "counts", "either_b"] {
                msg.clear_field_by_name(name);
            }
            for child in ["child"] {
                if let Some(Value::Message(mut c)) = msg.get_field_by_name(child).map(|v| v.into_owned()) {
                    for name in ["data", "real", "counts", "either_b", "child", "children"] {
                        c.clear_field_by_name(name);
                    }
                    msg.set_field_by_name(child, Value::Message(c));
                }
            }
            msg.clear_field_by_name("children");
            let wire = msg.encode_to_vec();
            let json = encode(&desc, &wire).unwrap_or_else(|_| panic!("fell back for {msg:?}"));
            assert_eq!(Ok(json), slow(&desc, &wire));
        }
    }

    #[test]
    fn never_accepts_what_the_decoder_refuses() {
        let pool = pool();
        let desc = pool.get_message_by_name("t.Kinds").unwrap();
        let mut rng = Rng(42);
        for _ in 0..3_000 {
            let mut wire = random(&mut rng, &desc, 0).encode_to_vec();
            // Damage it: cut it short, flip a byte, or append a stray tag.
            match rng.below(3) {
                0 if !wire.is_empty() => wire.truncate(rng.below(wire.len() as u64) as usize),
                1 if !wire.is_empty() => {
                    let i = rng.below(wire.len() as u64) as usize;
                    wire[i] ^= 1 << rng.below(8);
                }
                _ => wire.push(rng.pick(&[0x08, 0x0a, 0x0b, 0x80, 0x00])),
            }
            if let Ok(json) = encode(&desc, &wire) {
                assert_eq!(Ok(json), slow(&desc, &wire), "{wire:?}");
            }
        }
    }

    #[test]
    fn unpacked_repeated_and_repeated_singular_fields_read_as_the_decoder_reads_them() {
        let pool = pool();
        let desc = pool.get_message_by_name("t.Kinds").unwrap();
        // ints (18) unpacked then packed; text (12) twice, the last wins; an unknown field 99.
        let wire = [
            0x90, 0x01, 0x05, 0x90, 0x01, 0x7f, 0x92, 0x01, 0x02, 0x01, 0x02, 0x62, 0x01, b'a', 0x62, 0x01,
            b'b', 0x98, 0x06, 0x01,
        ];
        let json = String::from_utf8(encode(&desc, &wire).unwrap()).unwrap();
        assert!(json.contains("\"ints\":[5,127,1,2]"), "{json}");
        assert!(json.contains("\"text\":\"b\""), "{json}");
        assert_eq!(Ok(json.into_bytes()), slow(&desc, &wire));
    }
}
