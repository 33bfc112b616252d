//! `[[route]]` tables, checked against everything else: the RPC exists and is unary, path
//! parameters name scalar fields of its request, the body binding fits, upstreams and policies
//! are defined, names and paths do not collide; and where the descriptors come from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prost_reflect::{DescriptorPool, Kind, MessageDescriptor, MethodDescriptor};

use super::raw::{RawDescriptors, RawRoute};
use super::{
    Access, Body, Breaker, DEFAULT_TIMEOUT, Limit, Problems, RESERVED_PATHS, Route, Upstream, duration,
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
    let body = match r.body.as_deref() {
        None | Some("") => Body::None,
        Some("*") => Body::Whole,
        Some(f) => Body::Field(f.to_owned()),
    };
    if body != Body::None && matches!(method.as_str(), "GET" | "DELETE") {
        p.add(place, "body", format!("{method} routes take no body"));
    }
    if let (Some(rpc), Some(t)) = (&rpc, &template) {
        check_bindings(p, place, rpc, t, &body);
    }
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
        status,
        access,
        timeout,
        limit: r.limit.clone(),
        breaker: r.breaker.clone(),
        idempotent: r.idempotent.unwrap_or(false),
    })
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
/// field.
fn check_bindings(p: &mut Problems, place: &str, rpc: &MethodDescriptor, t: &Template, body: &Body) {
    let input = rpc.input();
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
    }
    if let Body::Field(name) = body {
        match input.get_field_by_name(name) {
            Some(f) if matches!(f.kind(), Kind::Message(_)) && !f.is_list() && !f.is_map() => {}
            Some(_) => p.add(
                place,
                "body",
                format!("{name} is not a message field; use body = \"*\""),
            ),
            None => p.add(
                place,
                "body",
                format!(
                    "{name:?} is no field of {} (fields: {})",
                    input.full_name(),
                    field_names(&input)
                ),
            ),
        }
    }
}

fn field_names(m: &MessageDescriptor) -> String {
    m.fields()
        .map(|f| f.name().to_owned())
        .collect::<Vec<_>>()
        .join(", ")
}
