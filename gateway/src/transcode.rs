//! JSON to protobuf and back, driven by the descriptors: the request message is built from the
//! route's path parameters, the query string, the request headers it binds and the body (JSON, or
//! the raw bytes into one field, as the route binds it), and the reply is written as JSON with the
//! proto field names and 64-bit integers as numbers.
//!
//! Input is strict: an unknown field, a value of the wrong type, a parameter or header given
//! twice, a field given in two places or a body where none belongs is refused with a message that
//! names the field, parameter or header.

use bytes::Bytes;
use http::HeaderMap;
use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage,
    SerializeOptions, Value,
};

use crate::config::{Body, Route};
use crate::router::percent_decode;

/// How deep a JSON body may nest. The shop's messages are three levels deep at most.
const MAX_DEPTH: usize = 32;

/// Builds the request message for `route`. Errors are sentences for the client (400).
pub fn request(
    route: &Route,
    params: &[(String, String)],
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<DynamicMessage, String> {
    let input = route.input();
    let mut msg = from_body(route, &input, body)?;

    for (name, text) in params {
        let field = input
            .get_field_by_name(name)
            .ok_or_else(|| format!("path parameter {name} has no field"))?;
        let value = scalar(&field, text).map_err(|why| format!("path parameter {name}: {why}"))?;
        if msg.has_field(&field) && *msg.get_field(&field) != value {
            return Err(format!(
                "{name} in the body differs from {name} in the path; leave it out of the body"
            ));
        }
        msg.set_field(&field, value);
    }
    bind_headers(&mut msg, route, headers)?;

    if let Some(query) = query.filter(|q| !q.is_empty()) {
        if route.body == Body::Whole {
            return Err("this route takes its input from the body, not from query parameters".to_owned());
        }
        bind_query(&mut msg, route, params, query)?;
    }
    Ok(msg)
}

/// The message as the route's body binding starts it: empty (and no body allowed), parsed from
/// the JSON body, with the JSON body in one message field, or with the body's bytes, exactly as
/// received, in one field (an empty body leaves it empty).
fn from_body(route: &Route, input: &MessageDescriptor, body: &[u8]) -> Result<DynamicMessage, String> {
    let has_json = || !body.iter().all(u8::is_ascii_whitespace);
    match &route.body {
        Body::None => {
            if has_json() {
                return Err(format!(
                    "{} {} takes no request body",
                    route.method,
                    route.template.as_str()
                ));
            }
            Ok(DynamicMessage::new(input.clone()))
        }
        Body::Whole => {
            if !has_json() {
                return Err("a JSON object is required as the request body".to_owned());
            }
            parse_body(input, body)
        }
        Body::Field(name) => {
            let mut msg = DynamicMessage::new(input.clone());
            if has_json() {
                let field = input
                    .get_field_by_name(name)
                    .ok_or_else(|| format!("the route binds the body to {name}, which is gone"))?;
                let Kind::Message(inner) = field.kind() else {
                    return Err(format!(
                        "the route binds the body to {name}, which is not a message"
                    ));
                };
                msg.set_field(&field, Value::Message(parse_body(&inner, body)?));
            }
            Ok(msg)
        }
        Body::Raw(name) => {
            let mut msg = DynamicMessage::new(input.clone());
            if !body.is_empty() {
                let field = input
                    .get_field_by_name(name)
                    .ok_or_else(|| format!("the route binds the body to {name}, which is gone"))?;
                msg.set_field(&field, raw_value(&field, body)?);
            }
            Ok(msg)
        }
    }
}

/// The body's bytes as the value of the field `raw_body` names: as they are for `bytes`, as text
/// for `string` (then they must be UTF-8).
fn raw_value(field: &FieldDescriptor, body: &[u8]) -> Result<Value, String> {
    match field.kind() {
        Kind::Bytes => Ok(Value::Bytes(Bytes::copy_from_slice(body))),
        Kind::String => std::str::from_utf8(body)
            .map(|text| Value::String(text.to_owned()))
            .map_err(|_| {
                format!(
                    "the request body is not valid UTF-8; this route takes it as the text field {}",
                    field.name()
                )
            }),
        _ => Err(format!(
            "the route binds the body to {}, which is not bytes or a string",
            field.name()
        )),
    }
}

/// The route's header bindings fill their fields, parsed as path parameters are; an absent
/// header leaves its field unset. The field is the header's alone: a JSON body may not set it
/// (nor may the query, see [`taken`]). Routes without header bindings skip this at once.
fn bind_headers(msg: &mut DynamicMessage, route: &Route, headers: &HeaderMap) -> Result<(), String> {
    for b in &route.headers {
        if msg.has_field(&b.field) {
            return Err(format!(
                "{} is taken from the {} header; leave it out of the body",
                b.field.name(),
                b.header
            ));
        }
        let mut values = headers.get_all(&b.header).iter();
        let Some(value) = values.next() else {
            continue;
        };
        if values.next().is_some() {
            return Err(format!("header {} is given more than once", b.header));
        }
        let text = value
            .to_str()
            .map_err(|_| format!("header {} must be visible ASCII text", b.header))?;
        let value = scalar(&b.field, text).map_err(|why| format!("header {}: {why}", b.header))?;
        msg.set_field(&b.field, value);
    }
    Ok(())
}

/// The reply message as JSON bytes.
pub fn response(msg: &DynamicMessage) -> Result<Bytes, String> {
    let options = SerializeOptions::new()
        .stringify_64_bit_integers(false)
        .use_proto_field_name(true)
        .skip_default_fields(false);
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::new(&mut out);
    msg.serialize_with_options(&mut ser, &options)
        .map_err(|e| format!("cannot write {} as JSON: {e}", msg.descriptor().full_name()))?;
    Ok(Bytes::from(out))
}

fn parse_body(desc: &MessageDescriptor, body: &[u8]) -> Result<DynamicMessage, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not valid JSON: {e}"))?;
    if !value.is_object() {
        return Err("the request body must be a JSON object".to_owned());
    }
    // The descriptor walk names the field at fault ("items[0].price"); prost-reflect's own
    // errors do not say where they are.
    check(desc, &value, "", 0)?;
    DynamicMessage::deserialize_with_options(desc.clone(), value, &DeserializeOptions::new())
        .map_err(|e| format!("the body does not match {}: {e}", desc.name()))
}

/// Checks that `value` fits `desc`: every key is a field, every value has the field's JSON type.
fn check(desc: &MessageDescriptor, value: &serde_json::Value, at: &str, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("{at}: nested too deeply"));
    }
    let Some(object) = value.as_object() else {
        return Err(format!("{}: expected a JSON object", place(at)));
    };
    for (key, v) in object {
        let path = if at.is_empty() {
            key.clone()
        } else {
            format!("{at}.{key}")
        };
        let field = desc
            .get_field_by_name(key)
            .or_else(|| desc.get_field_by_json_name(key))
            .ok_or_else(|| format!("unknown field {path} (known: {})", known(desc)))?;
        if v.is_null() {
            continue;
        }
        if field.is_list() {
            let items = v.as_array().ok_or_else(|| format!("{path}: expected an array"))?;
            for (i, item) in items.iter().enumerate() {
                check_one(&field, item, &format!("{path}[{i}]"), depth)?;
            }
        } else if field.is_map() {
            if !v.is_object() {
                return Err(format!("{path}: expected an object"));
            }
        } else {
            check_one(&field, v, &path, depth)?;
        }
    }
    Ok(())
}

fn check_one(field: &FieldDescriptor, v: &serde_json::Value, path: &str, depth: usize) -> Result<(), String> {
    use serde_json::Value as J;
    let ok = match field.kind() {
        Kind::Message(m) if is_well_known(&m) => true,
        Kind::Message(m) => return check(&m, v, path, depth + 1),
        Kind::String => v.is_string(),
        Kind::Bool => v.is_boolean(),
        Kind::Bytes => v.is_string(),
        Kind::Enum(_) => v.is_string() || v.is_i64(),
        Kind::Double | Kind::Float => v.is_number() || v.is_string(),
        // Integers: a JSON integer, or a string of digits (proto3 JSON allows both).
        _ => match v {
            J::Number(n) => n.is_i64() || n.is_u64(),
            J::String(s) => s.trim_start_matches('-').chars().all(|c| c.is_ascii_digit()) && !s.is_empty(),
            _ => false,
        },
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{path}: expected {}, got {}",
            kind_name(field),
            json_type(v)
        ))
    }
}

fn is_well_known(m: &MessageDescriptor) -> bool {
    m.full_name().starts_with("google.protobuf.")
}

fn place(at: &str) -> &str {
    if at.is_empty() { "the body" } else { at }
}

fn known(desc: &MessageDescriptor) -> String {
    desc.fields()
        .map(|f| f.name().to_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

fn kind_name(field: &FieldDescriptor) -> &'static str {
    match field.kind() {
        Kind::String => "a string",
        Kind::Bool => "true or false",
        Kind::Bytes => "a base64 string",
        Kind::Enum(_) => "an enum name",
        Kind::Double | Kind::Float => "a number",
        Kind::Message(m) if m.full_name() == "google.protobuf.Timestamp" => "an RFC 3339 time",
        Kind::Message(_) => "an object",
        _ => "an integer",
    }
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Query parameters fill scalar fields of the request (repeated ones by repeating the
/// parameter). Unknown parameters, parameters that repeat a single field and parameters for
/// fields the path, a header or the raw body set are refused.
fn bind_query(
    msg: &mut DynamicMessage,
    route: &Route,
    params: &[(String, String)],
    query: &str,
) -> Result<(), String> {
    let input = route.input();
    let mut seen: Vec<String> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = form_decode(raw_name).ok_or("a query parameter name is not valid percent-encoding")?;
        let text = form_decode(raw_value)
            .ok_or_else(|| format!("query parameter {name} is not valid percent-encoding"))?;
        let field = input.get_field_by_name(&name).ok_or_else(|| {
            format!(
                "unknown query parameter {name} (known: {})",
                scalar_fields(route, params)
            )
        })?;
        if let Some(refusal) = taken(route, params, &name) {
            return Err(refusal);
        }
        if field.is_map() || matches!(field.kind(), Kind::Message(_)) {
            return Err(format!("{name} cannot be set from the query"));
        }
        let value = scalar(&field, &text).map_err(|why| format!("query parameter {name}: {why}"))?;
        if field.is_list() {
            if let Value::List(items) = msg.get_field_mut(&field) {
                items.push(value);
            }
        } else {
            if seen.contains(&name) {
                return Err(format!("query parameter {name} is given more than once"));
            }
            seen.push(name);
            msg.set_field(&field, value);
        }
    }
    Ok(())
}

/// Where else than the query the route takes the field `name` from, as the refusal of a query
/// parameter naming it.
fn taken(route: &Route, params: &[(String, String)], name: &str) -> Option<String> {
    if params.iter().any(|(p, _)| p == name) {
        Some(format!("{name} is given in the path; leave it out of the query"))
    } else if let Some(b) = route.headers.iter().find(|b| b.field.name() == name) {
        Some(format!(
            "{name} is taken from the {} header; leave it out of the query",
            b.header
        ))
    } else if matches!(&route.body, Body::Raw(f) if f == name) {
        Some(format!("{name} is the request body; leave it out of the query"))
    } else {
        None
    }
}

fn scalar_fields(route: &Route, params: &[(String, String)]) -> String {
    route
        .input()
        .fields()
        .filter(|f| !f.is_map() && !matches!(f.kind(), Kind::Message(_)))
        .filter(|f| taken(route, params, f.name()).is_none())
        .map(|f| f.name().to_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, then `%XX` escapes.
fn form_decode(s: &str) -> Option<String> {
    percent_decode(&s.replace('+', " "))
}

/// Parses a path, query or header value as the field's type.
pub fn scalar(field: &FieldDescriptor, text: &str) -> Result<Value, String> {
    fn num<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, String> {
        text.parse::<T>()
            .map_err(|_| format!("expected {what}, got {text:?}"))
    }
    Ok(match field.kind() {
        Kind::String => Value::String(text.to_owned()),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(num(text, "an integer")?),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(num(text, "a 32-bit integer")?),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(num(text, "a non-negative integer")?),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(num(text, "a non-negative 32-bit integer")?),
        Kind::Double => Value::F64(num(text, "a number")?),
        Kind::Float => Value::F32(num(text, "a number")?),
        Kind::Bool => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(format!("expected true or false, got {text:?}")),
        },
        Kind::Enum(e) => match e.get_value_by_name(text) {
            Some(v) => Value::EnumNumber(v.number()),
            None => {
                return Err(format!("expected one of {}, got {text:?}", {
                    e.values()
                        .map(|v| v.name().to_owned())
                        .collect::<Vec<_>>()
                        .join(", ")
                }));
            }
        },
        Kind::Bytes | Kind::Message(_) => return Err("cannot be given as text".to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Access, Body, HeaderBinding};
    use crate::router::Template;
    use http::{HeaderName, HeaderValue};
    use prost_reflect::DescriptorPool;
    use std::time::Duration;

    fn route(rpc: &str, method: &str, path: &str, body: Body) -> Route {
        let pool = DescriptorPool::decode(shop_proto::FILE_DESCRIPTOR_SET).unwrap();
        let (service, m) = rpc.split_once('/').unwrap();
        let rpc = pool
            .get_service_by_name(service)
            .unwrap()
            .methods()
            .find(|x| x.name() == m)
            .unwrap();
        Route {
            name: "t".into(),
            method: method.into(),
            template: Template::parse(path).unwrap(),
            upstream: "u".into(),
            rpc,
            body,
            headers: Vec::new(),
            status: 200,
            access: Access::Public,
            timeout: Duration::from_secs(1),
            limit: None,
            breaker: None,
            idempotent: false,
        }
    }

    fn none() -> HeaderMap {
        HeaderMap::new()
    }

    /// A route with `headers` bound (header name, field name).
    fn with_headers(mut r: Route, headers: &[(&'static str, &str)]) -> Route {
        let input = r.input();
        r.headers = headers
            .iter()
            .map(|(h, f)| HeaderBinding {
                header: HeaderName::from_static(h),
                field: input.get_field_by_name(f).unwrap(),
            })
            .collect();
        r
    }

    /// `POST /api/payments/webhook`: `payload` (bytes) and `signature` (string).
    fn webhook_route(body: Body) -> Route {
        route(
            "shop.order.v1.OrderService/HandlePaymentWebhook",
            "POST",
            "/api/payments/webhook",
            body,
        )
    }

    fn header(name: &'static str, value: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.append(name, HeaderValue::from_bytes(value).unwrap());
        h
    }

    fn order_route() -> Route {
        route(
            "shop.order.v1.OrderService/CreateOrder",
            "POST",
            "/api/orders",
            Body::Whole,
        )
    }

    fn json_of(msg: &DynamicMessage) -> serde_json::Value {
        serde_json::from_slice(&response(msg).unwrap()).unwrap()
    }

    #[test]
    fn a_client_sent_price_is_an_unknown_field_named_by_its_place() {
        let body = br#"{"items": [{"product_id": 1, "quantity": 2, "price": 1}]}"#;
        let err = request(&order_route(), &[], None, &none(), body).unwrap_err();
        assert!(err.contains("unknown field items[0].price"), "{err}");
    }

    #[test]
    fn wrong_types_and_bad_json_are_named() {
        let r = order_route();
        let err = request(&r, &[], None, &none(), br#"{"items": [{"product_id": "one"}]}"#).unwrap_err();
        assert!(
            err.contains("items[0].product_id: expected an integer, got a string"),
            "{err}"
        );
        let err = request(&r, &[], None, &none(), br#"{"items": 3}"#).unwrap_err();
        assert!(err.contains("items: expected an array"), "{err}");
        let err = request(&r, &[], None, &none(), br#"{"items": [}"#).unwrap_err();
        assert!(err.contains("not valid JSON"), "{err}");
        let err = request(&r, &[], None, &none(), b"[1]").unwrap_err();
        assert!(err.contains("must be a JSON object"), "{err}");
        let err = request(&r, &[], None, &none(), b"  ").unwrap_err();
        assert!(err.contains("required"), "{err}");
    }

    #[test]
    fn path_parameters_are_typed_and_must_agree_with_the_body() {
        let r = route(
            "shop.user.v1.UserService/UpdateUser",
            "PUT",
            "/api/users/{id}",
            Body::Whole,
        );
        let ok = request(
            &r,
            &[("id".into(), "7".into())],
            None,
            &none(),
            br#"{"full_name": "A"}"#,
        )
        .unwrap();
        assert_eq!(json_of(&ok)["id"], 7);
        let err = request(
            &r,
            &[("id".into(), "abc".into())],
            None,
            &none(),
            br#"{"full_name": "A"}"#,
        )
        .unwrap_err();
        assert_eq!(err, r#"path parameter id: expected an integer, got "abc""#);
        let err = request(&r, &[("id".into(), "7".into())], None, &none(), br#"{"id": 8}"#).unwrap_err();
        assert!(err.contains("differs"), "{err}");
        assert!(request(&r, &[("id".into(), "7".into())], None, &none(), br#"{"id": 7}"#).is_ok());
    }

    #[test]
    fn query_parameters_fill_scalar_fields_strictly() {
        let r = route(
            "shop.product.v1.ProductService/ListProducts",
            "GET",
            "/api/products",
            Body::None,
        );
        let msg = request(
            &r,
            &[],
            Some("page=2&page_size=5&q=%E6%89%8B%E6%9C%BA+pro"),
            &none(),
            b"",
        )
        .unwrap();
        let j = json_of(&msg);
        assert_eq!(j["page"], 2);
        assert_eq!(j["q"], "手机 pro");
        let err = request(&r, &[], Some("page=x"), &none(), b"").unwrap_err();
        assert_eq!(err, r#"query parameter page: expected a 32-bit integer, got "x""#);
        let err = request(&r, &[], Some("colour=red"), &none(), b"").unwrap_err();
        assert!(
            err.starts_with("unknown query parameter colour (known: "),
            "{err}"
        );
        let err = request(&r, &[], Some("page=1&page=2"), &none(), b"").unwrap_err();
        assert!(err.contains("more than once"), "{err}");
        let err = request(&r, &[], None, &none(), b"{}").unwrap_err();
        assert!(err.contains("takes no request body"), "{err}");
    }

    #[test]
    fn replies_use_proto_names_and_numbers_for_64_bit_integers() {
        let pool = DescriptorPool::decode(shop_proto::FILE_DESCRIPTOR_SET).unwrap();
        let desc = pool.get_message_by_name("shop.product.v1.Product").unwrap();
        let mut msg = DynamicMessage::new(desc);
        msg.set_field_by_name("id", Value::I64(9_007_199_254_740_993));
        msg.set_field_by_name("price_cents", Value::I64(9999));
        let j = json_of(&msg);
        assert_eq!(j["id"], serde_json::json!(9_007_199_254_740_993_i64));
        assert_eq!(j["price_cents"], 9999);
        // Zero values are written, not left out: a client reads "stock": 0, not a missing key.
        assert_eq!(j["stock"], 0);
    }

    #[test]
    fn a_raw_body_arrives_byte_exact() {
        let r = webhook_route(Body::Raw("payload".into()));
        for body in [
            &b"  {\"provider_ref\": \"p-1\",\n\t\"outcome\" : \"succeeded\"}\r\n"[..],
            b"\x00\xffnot JSON at all",
            b"   ",
        ] {
            let msg = request(&r, &[], None, &none(), body).unwrap();
            let got = msg.get_field_by_name("payload").unwrap();
            assert_eq!(got.as_bytes().unwrap().as_ref(), body);
            // And so it is encoded for the service.
            let sent = prost::Message::encode_to_vec(&msg);
            assert!(sent.windows(body.len()).any(|w| w == body));
        }
        let empty = request(&r, &[], None, &none(), b"").unwrap();
        assert!(!empty.has_field_by_name("payload"));
        // Query parameters still bind beside a raw body; the raw body's own field is not one.
        let msg = request(&r, &[], Some("signature=s1"), &none(), b"{}").unwrap();
        assert_eq!(json_of(&msg)["signature"], "s1");
        let err = request(&r, &[], Some("payload=x"), &none(), b"{}").unwrap_err();
        assert_eq!(err, "payload is the request body; leave it out of the query");
    }

    #[test]
    fn a_raw_body_into_a_string_field_must_be_utf8() {
        let r = webhook_route(Body::Raw("signature".into()));
        let msg = request(&r, &[], None, &none(), " tëxt \n".as_bytes()).unwrap();
        assert_eq!(json_of(&msg)["signature"], " tëxt \n");
        let err = request(&r, &[], None, &none(), b"caf\xe9").unwrap_err();
        assert_eq!(
            err,
            "the request body is not valid UTF-8; this route takes it as the text field signature"
        );
    }

    #[test]
    fn a_header_fills_its_field_and_a_missing_one_leaves_it_unset() {
        let r = with_headers(
            webhook_route(Body::Raw("payload".into())),
            &[("shop-signature", "signature")],
        );
        let h = header("Shop-Signature", b"t=1,v1=abc def");
        let msg = request(&r, &[], None, &h, b"{}").unwrap();
        assert_eq!(json_of(&msg)["signature"], "t=1,v1=abc def");
        assert_eq!(json_of(&msg)["payload"], "e30="); // base64 of {}
        let msg = request(&r, &[], None, &none(), b"{}").unwrap();
        assert!(!msg.has_field_by_name("signature"));
        // The field is the header's: not from the query, not from a JSON body.
        let err = request(&r, &[], Some("signature=x"), &h, b"{}").unwrap_err();
        assert_eq!(
            err,
            "signature is taken from the shop-signature header; leave it out of the query"
        );
        let whole = with_headers(webhook_route(Body::Whole), &[("shop-signature", "signature")]);
        let err = request(&whole, &[], None, &h, br#"{"signature": "forged"}"#).unwrap_err();
        assert_eq!(
            err,
            "signature is taken from the shop-signature header; leave it out of the body"
        );
    }

    #[test]
    fn a_bad_or_repeated_header_value_is_refused_naming_the_header() {
        let r = with_headers(
            webhook_route(Body::Raw("payload".into())),
            &[("shop-signature", "signature")],
        );
        for bad in [&b"caf\xc3\xa9"[..], b"caf\xe9"] {
            let err = request(&r, &[], None, &header("shop-signature", bad), b"{}").unwrap_err();
            assert_eq!(err, "header shop-signature must be visible ASCII text", "{bad:?}");
        }
        let mut twice = header("shop-signature", b"a");
        twice.append("shop-signature", HeaderValue::from_static("b"));
        let err = request(&r, &[], None, &twice, b"{}").unwrap_err();
        assert_eq!(err, "header shop-signature is given more than once");
    }

    #[test]
    fn a_header_bound_to_an_integer_is_parsed_like_a_path_parameter() {
        let r = with_headers(
            route(
                "shop.order.v1.OrderService/GetOrder",
                "GET",
                "/api/orders/current",
                Body::None,
            ),
            &[("x-order-id", "id")],
        );
        let msg = request(&r, &[], None, &header("x-order-id", b"42"), b"").unwrap();
        assert_eq!(json_of(&msg)["id"], 42);
        let err = request(&r, &[], None, &header("x-order-id", b"forty-two"), b"").unwrap_err();
        assert_eq!(err, r#"header x-order-id: expected an integer, got "forty-two""#);
    }
}
