//! `[[route]]` tables, checked against everything else: the RPC exists and is unary, path
//! parameters and header bindings name scalar fields of its request, the body binding (JSON or
//! raw) fits, no field is bound twice, upstreams and policies are defined, names and paths do not
//! collide; and where the descriptors come from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use http::HeaderName;
use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor};

use super::raw::{RawDescriptors, RawRoute};
use super::{
    Access, Body, Breaker, DEFAULT_TIMEOUT, HeaderBinding, Limit, Problems, RESERVED_PATHS, Route, Upstream,
    duration,
};
use crate::router::{Template, conflicts};

/// What the other tables defined, which routes refer to.
pub(super) struct Defined<'a> {
    pub(super) descriptors: Option<&'a DescriptorPool>,
    pub(super) upstreams: &'a BTreeMap<String, Upstream>,
    pub(super) limits: &'a BTreeMap<String, Limit>,
    pub(super) breakers: &'a BTreeMap<String, Breaker>,
}

pub(super) fn routes(raw: &[RawRoute], defined: &Defined<'_>, p: &mut Problems) -> Vec<Route> {
    let mut routes: Vec<Route> = Vec::new();
    for r in raw {
        let name = r
            .name
            .clone()
            .unwrap_or_else(|| format!("{} {}", r.method, r.path));
        let place = format!("route {name:?}");
        if routes.iter().any(|o| o.name == name) {
            p.add(&place, "name", "another route has this name");
        }
        if let Some(route) = route(r, name, &place, defined, p) {
            routes.push(route);
        }
    }
    for (a, b, why) in conflicts(
        routes
            .iter()
            .map(|r| (r.name.as_str(), r.method.as_str(), &r.template)),
    ) {
        p.add(format!("route {a:?}"), "path", format!("{why} route {b:?}"));
    }
    routes
}

fn method(r: &RawRoute, place: &str, p: &mut Problems) -> String {
    let method = r.method.to_ascii_uppercase();
    if !matches!(method.as_str(), "GET" | "POST" | "PUT" | "PATCH" | "DELETE") {
        p.add(
            place,
            "method",
            format!("expected GET, POST, PUT, PATCH or DELETE, got {:?}", r.method),
        );
    }
    method
}

fn access(r: &RawRoute, place: &str, p: &mut Problems) -> Access {
    match r.auth.as_deref().unwrap_or("user") {
        "public" => Access::Public,
        "user" => Access::User,
        "admin" => Access::Admin,
        other => {
            p.add(
                place,
                "auth",
                format!("expected public, user or admin, got {other:?}"),
            );
            Access::User
        }
    }
}

/// One route; `None` when its path or RPC cannot be used (the problems say why).
fn route(r: &RawRoute, name: String, place: &str, defined: &Defined<'_>, p: &mut Problems) -> Option<Route> {
    let method = method(r, place, p);
    if RESERVED_PATHS.contains(&r.path.as_str()) {
        p.add(place, "path", format!("{} is the gateway's own endpoint", r.path));
    }
    let template = Template::parse(&r.path)
        .map_err(|e| p.add(place, "path", e.to_string()))
        .ok();
    if !defined.upstreams.contains_key(&r.upstream) {
        p.add(
            place,
            "upstream",
            format!("no [upstream.{}] is defined", r.upstream),
        );
    }
    let rpc = defined
        .descriptors
        .and_then(|pool| resolve_rpc(pool, &r.rpc).map_err(|m| p.add(place, "rpc", m)).ok());
    let body = body(r, &method, place, p);
    let header_names = header_names(r, place, p);
    let headers = match (&rpc, &template) {
        (Some(rpc), Some(t)) => check_bindings(p, place, rpc, t, &body, &header_names),
        _ => Vec::new(),
    };
    let status = r.status.unwrap_or(200);
    if !matches!(status, 200 | 201 | 204) {
        p.add(place, "status", format!("expected 200, 201 or 204, got {status}"));
    }
    let access = access(r, place, p);
    for (key, policy, defined) in [
        (
            "limit",
            &r.limit,
            defined
                .limits
                .contains_key(r.limit.as_deref().unwrap_or_default()),
        ),
        (
            "breaker",
            &r.breaker,
            defined
                .breakers
                .contains_key(r.breaker.as_deref().unwrap_or_default()),
        ),
    ] {
        if let Some(name) = policy
            && !defined
        {
            p.add(place, key, format!("no [{key}.{name}] is defined"));
        }
    }
    let upstream_timeout = defined
        .upstreams
        .get(&r.upstream)
        .map_or(DEFAULT_TIMEOUT, |u| u.timeout);
    let timeout = duration(p, place, "timeout", r.timeout.as_deref(), upstream_timeout);
    Some(Route {
        name,
        method,
        template: template?,
        upstream: r.upstream.clone(),
        rpc: rpc?,
        body,
        headers,
        status,
        access,
        timeout,
        limit: r.limit.clone(),
        breaker: r.breaker.clone(),
        idempotent: r.idempotent.unwrap_or(false),
    })
}

/// `body` or `raw_body` (not both); GET and DELETE take neither.
fn body(r: &RawRoute, method: &str, place: &str, p: &mut Problems) -> Body {
    let body = match (r.body.as_deref(), &r.raw_body) {
        (None | Some(""), None) => Body::None,
        (Some("*"), None) => Body::Whole,
        (Some(f), None) => Body::Field(f.to_owned()),
        (json, Some(f)) => {
            if json.is_some() {
                p.add(
                    place,
                    "raw_body",
                    "body and raw_body both bind the body; keep one",
                );
            }
            Body::Raw(f.clone())
        }
    };
    let key = if matches!(body, Body::Raw(_)) {
        "raw_body"
    } else {
        "body"
    };
    if body != Body::None && matches!(method, "GET" | "DELETE") {
        p.add(place, key, format!("{method} routes take no body"));
    }
    body
}

/// Headers a route may not bind. Those about the connection rather than the request (hop-by-hop
/// headers, framing, `host`) are not the same in HTTP/1.1 and HTTP/2, which sends none of them,
/// so a binding would work on one and not the other. `authorization` reaches the service as
/// metadata; a copy of it (or of `proxy-authorization`, `cookie`) in a message field is a
/// credential the service may log or store.
const UNBINDABLE_HEADERS: [&str; 12] = [
    "authorization",
    "connection",
    "content-length",
    "cookie",
    "host",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// `headers = { "Name" = "field" }`: valid header names, each named once (names are
/// case-insensitive), none of [`UNBINDABLE_HEADERS`]. The fields are checked with the RPC.
fn header_names(r: &RawRoute, place: &str, p: &mut Problems) -> Vec<(HeaderName, String)> {
    let mut names: Vec<(HeaderName, String)> = Vec::new();
    for (name, field) in r.headers.iter().flatten() {
        let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
            p.add(
                place,
                "headers",
                format!("{name:?} is not a valid HTTP header name"),
            );
            continue;
        };
        if header == http::header::AUTHORIZATION {
            p.add(
                place,
                "headers",
                format!("{name} cannot be bound: the token reaches the service as metadata"),
            );
        } else if UNBINDABLE_HEADERS.contains(&header.as_str()) {
            p.add(
                place,
                "headers",
                format!("{name} cannot be bound: it describes the connection, not the request"),
            );
        } else if names.iter().any(|(h, _)| *h == header) {
            p.add(
                place,
                "headers",
                format!("{name} is named twice (header names are case-insensitive)"),
            );
        } else {
            names.push((header, field.clone()));
        }
    }
    names
}

/// The proto descriptors routes are checked and transcoded with: built in, or compiled from files.
pub(super) fn descriptors(raw: &RawDescriptors, base: &Path, p: &mut Problems) -> Option<DescriptorPool> {
    match (raw.source.as_deref().unwrap_or("builtin"), &raw.files) {
        ("builtin", None) => match DescriptorPool::decode(shop_proto::FILE_DESCRIPTOR_SET) {
            Ok(pool) => Some(pool),
            Err(e) => {
                p.add(
                    "descriptors",
                    "source",
                    format!("the built-in descriptors do not decode: {e}"),
                );
                None
            }
        },
        ("files", Some(files)) if !files.is_empty() => {
            let includes: Vec<PathBuf> = raw
                .includes
                .clone()
                .unwrap_or_else(|| vec![PathBuf::from(".")])
                .iter()
                .map(|i| base.join(i))
                .collect();
            let files: Vec<PathBuf> = files.iter().map(|f| base.join(f)).collect();
            match protox::compile(&files, &includes) {
                Ok(set) => match DescriptorPool::from_file_descriptor_set(set) {
                    Ok(pool) => Some(pool),
                    Err(e) => {
                        p.add("descriptors", "files", e.to_string());
                        None
                    }
                },
                Err(e) => {
                    p.add("descriptors", "files", format!("cannot compile: {e}"));
                    None
                }
            }
        }
        ("files", _) => {
            p.add(
                "descriptors",
                "files",
                "source = \"files\" needs a non-empty files list",
            );
            None
        }
        ("builtin", Some(_)) => {
            p.add(
                "descriptors",
                "files",
                "files are read only with source = \"files\"",
            );
            None
        }
        (other, _) => {
            p.add(
                "descriptors",
                "source",
                format!("expected \"builtin\" or \"files\", got {other:?}"),
            );
            None
        }
    }
}

/// `package.Service/Method` -> the method, unary only.
fn resolve_rpc(pool: &DescriptorPool, rpc: &str) -> Result<MethodDescriptor, String> {
    let (service, method) = rpc
        .split_once('/')
        .ok_or_else(|| format!("expected package.Service/Method, got {rpc:?}"))?;
    let svc = pool
        .get_service_by_name(service)
        .ok_or_else(|| format!("no service {service:?} in the descriptors"))?;
    let m = svc.methods().find(|m| m.name() == method).ok_or_else(|| {
        let known: Vec<String> = svc.methods().map(|m| m.name().to_owned()).collect();
        format!("{service} has no method {method:?} (it has {})", known.join(", "))
    })?;
    if m.is_client_streaming() || m.is_server_streaming() {
        return Err(format!(
            "{rpc} is a streaming method; routes call unary methods only"
        ));
    }
    Ok(m)
}

/// Path parameters must name scalar fields of the request; a body field must be a message
/// field, a raw body field a single `bytes` or `string` one, a header's field a single scalar
/// other than `bytes`; no field is bound twice. Returns the header bindings, resolved.
fn check_bindings(
    p: &mut Problems,
    place: &str,
    rpc: &MethodDescriptor,
    t: &Template,
    body: &Body,
    headers: &[(HeaderName, String)],
) -> Vec<HeaderBinding> {
    let input = rpc.input();
    // What binds each field so far, for "bound twice".
    let mut bound: Vec<(&str, String)> = Vec::new();
    for param in t.params() {
        match input.get_field_by_name(param) {
            None => p.add(
                place,
                "path",
                format!(
                    "{{{param}}} matches no field of {} (fields: {})",
                    input.full_name(),
                    field_names(&input)
                ),
            ),
            Some(f) if f.is_list() || f.is_map() || matches!(f.kind(), Kind::Message(_)) => p.add(
                place,
                "path",
                format!("{{{param}}} binds to {}, which is not a scalar field", f.name()),
            ),
            Some(_) => {}
        }
        bound.push((param, format!("{{{param}}} in the path")));
    }
    match body {
        Body::Field(name) => match input.get_field_by_name(name) {
            Some(f) if matches!(f.kind(), Kind::Message(_)) && !f.is_list() && !f.is_map() => {}
            Some(_) => p.add(
                place,
                "body",
                format!("{name} is not a message field; use body = \"*\""),
            ),
            None => p.add(place, "body", no_field(name, &input)),
        },
        Body::Raw(name) => {
            match input.get_field_by_name(name) {
                Some(f) if matches!(f.kind(), Kind::Bytes | Kind::String) && !f.is_list() => {}
                Some(_) => p.add(
                    place,
                    "raw_body",
                    format!("{name} is not a single bytes or string field"),
                ),
                None => p.add(place, "raw_body", no_field(name, &input)),
            }
            bind_once(p, place, "raw_body", &mut bound, name, "raw_body".to_owned());
        }
        Body::None | Body::Whole => {}
    }
    headers
        .iter()
        .filter_map(|(header, name)| {
            bind_once(p, place, "headers", &mut bound, name, format!("header {header}"));
            header_field(p, place, &input, header, name).map(|field| HeaderBinding {
                header: header.clone(),
                field,
            })
        })
        .collect()
}

/// The field a header binds: a single string, number, bool or enum field (what
/// [`crate::transcode::scalar`] parses from text).
fn header_field(
    p: &mut Problems,
    place: &str,
    input: &MessageDescriptor,
    header: &HeaderName,
    name: &str,
) -> Option<FieldDescriptor> {
    let Some(f) = input.get_field_by_name(name) else {
        p.add(place, "headers", format!("{header}: {}", no_field(name, input)));
        return None;
    };
    if f.is_list() || f.is_map() || matches!(f.kind(), Kind::Message(_) | Kind::Bytes) {
        p.add(
            place,
            "headers",
            format!("{header} binds to {name}, which is not a single string, number, bool or enum field"),
        );
        return None;
    }
    Some(f)
}

/// Records that `by` binds `field`; a problem on `key` when something already does.
fn bind_once<'a>(
    p: &mut Problems,
    place: &str,
    key: &str,
    bound: &mut Vec<(&'a str, String)>,
    field: &'a str,
    by: String,
) {
    match bound.iter().find(|(f, _)| *f == field) {
        Some((_, first)) => p.add(
            place,
            key,
            format!("{field} is bound twice: by {first} and by {by}"),
        ),
        None => bound.push((field, by)),
    }
}

fn no_field(name: &str, input: &MessageDescriptor) -> String {
    format!(
        "{name:?} is no field of {} (fields: {})",
        input.full_name(),
        field_names(input)
    )
}

fn field_names(m: &MessageDescriptor) -> String {
    m.fields()
        .map(|f| f.name().to_owned())
        .collect::<Vec<_>>()
        .join(", ")
}
