//! The Consul agent's HTTP API, the few calls the shop needs, over a plain hyper client: services,
//! checks and health here, sessions and locks in [`crate::session`]. These two files are the only
//! places in the code base that build a Consul URL.
//!
//! Every request has a timeout: short for agent writes, `wait + wait/16 + margin` for blocking
//! reads (Consul adds up to wait/16 of jitter to a blocking query). The ACL token travels in the
//! `X-Consul-Token` header of every call (registration, health reads, sessions, KV), never in a
//! query string, and is never logged: `Debug` redacts it and error texts have it cut out.
//! A 403 is [`ConsulError::Denied`], whatever Consul's wording; reads that ACLs quietly filter
//! are found by [`ConsulClient::check_visible`].

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

/// Timeout of a non-blocking call to the agent (register, deregister, lookups). An unbounded
/// register call can hang forever on a wedged agent.
pub const AGENT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Added to `wait + wait/16` for a blocking query's client timeout, to cover the round trip.
pub const BLOCKING_MARGIN: Duration = Duration::from_secs(5);

/// What went wrong talking to Consul. Decided from what Consul answered (status codes, the shape
/// of the body), never from the text of its messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsulError {
    #[error("bad Consul address {0:?}: expected http://host:port")]
    Address(String),
    #[error("cannot reach Consul at {addr}: {message}")]
    Transport { addr: String, message: String },
    #[error("Consul at {addr} did not answer within {after:?}")]
    Timeout { addr: String, after: Duration },
    #[error("Consul answered {status} to {what}: {body}")]
    Status { status: u16, what: String, body: String },
    /// HTTP 403: Consul's ACLs refused the call. Consul says `ACL not found` for a token it does
    /// not know and `Permission denied` for one whose policy lacks the rule; its words are kept in
    /// `body` for people, and nothing decides on them.
    #[error("Consul's ACLs refused {what} (403 {body:?}): {}", refusal_hint(*token_sent))]
    Denied {
        what: String,
        /// Whether this client sent a token (`false`: Consul used its anonymous token).
        token_sent: bool,
        body: String,
    },
    /// Consul answered, but its ACLs filtered out what the token may not read. Consul 1.8 says
    /// nothing when it filters a health answer, so this is found by a probe after an empty
    /// answer (see [`ConsulClient::check_visible`]).
    #[error("Consul hides {service} from this client: {} lacks the ACL rule `{rule}` ({})",
        if *token_sent { "the configured token" } else { "no ACL token is configured, and the anonymous token" },
        ACL_DOCS)]
    Filtered {
        service: String,
        token_sent: bool,
        /// The missing rule, in Consul's policy language.
        rule: String,
    },
    #[error("Consul's answer to {what} is not what we expect: {problem}")]
    Decode { what: String, problem: String },
}

/// Where a person who meets an ACL error finds the rules and settings.
const ACL_DOCS: &str = "docs/discovery.md, \"ACL tokens\", lists the rules and how to pass a token";

fn refusal_hint(token_sent: bool) -> String {
    if token_sent {
        format!(
            "the configured ACL token is unknown to Consul (mistyped, deleted, expired) or its policy \
             does not allow this; {ACL_DOCS}"
        )
    } else {
        format!("no ACL token is configured, and Consul's anonymous token may not do this; {ACL_DOCS}")
    }
}

impl ConsulError {
    /// Consul understood the call and refused it, or hides what was asked for (ACLs, a bad
    /// request): asking again unchanged will not help until someone changes a token, a policy or
    /// the code, so it deserves an error in the log rather than a warning.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            ConsulError::Denied { .. }
                | ConsulError::Filtered { .. }
                | ConsulError::Status { status: 400, .. }
        )
    }
}

/// One healthy service instance as Consul reports it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    /// The instance id it registered with.
    pub id: String,
    /// Host or IP: the service's own address, or its node's when the service gave none.
    pub host: String,
    pub port: u16,
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
}

impl Endpoint {
    /// `host:port`, with IPv6 hosts in brackets.
    pub fn authority(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// What a service instance registers: an id unique per instance, the service name, where to
/// reach it, and how Consul checks its health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub id: String,
    pub name: String,
    /// Empty: Consul uses the agent node's address (right for a service bound to 0.0.0.0).
    pub address: String,
    pub port: u16,
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
    /// `host:port/grpc.service.Name` for Consul's gRPC health check (grpc.health.v1).
    pub grpc_check: String,
    pub check_interval: Duration,
    pub check_timeout: Duration,
    /// Consul removes an instance whose check stayed critical this long (minimum 1m).
    pub deregister_after: Duration,
}

fn go_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RegisterBody<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    name: &'a str,
    address: &'a str,
    port: u16,
    tags: &'a [String],
    meta: &'a BTreeMap<String, String>,
    check: CheckBody,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CheckBody {
    #[serde(rename = "CheckID")]
    check_id: String,
    name: String,
    #[serde(rename = "GRPC")]
    grpc: String,
    #[serde(rename = "GRPCUseTLS")]
    grpc_use_tls: bool,
    interval: String,
    timeout: String,
    deregister_critical_service_after: String,
    /// Registered after the server is listening, so it starts passing rather than waiting one
    /// interval as critical.
    status: &'static str,
}

// The health endpoint's answer. Lenient by design: Consul adds fields across versions, and
// `Tags`/`Meta` may be null.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HealthEntry {
    node: Option<NodeEntry>,
    service: Option<ServiceEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NodeEntry {
    #[serde(default)]
    address: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceEntry {
    #[serde(rename = "ID", default)]
    id: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    port: u16,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    meta: Option<BTreeMap<String, String>>,
}

/// Turns a health answer into endpoints, sorted by id. Entries without an id or a port are
/// dropped; a service without an address takes its node's.
pub fn parse_health(body: &[u8]) -> Result<Vec<Endpoint>, String> {
    let entries: Option<Vec<HealthEntry>> = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for entry in entries.unwrap_or_default() {
        let Some(service) = entry.service else { continue };
        let host = if service.address.is_empty() {
            entry.node.map(|n| n.address).unwrap_or_default()
        } else {
            service.address
        };
        if service.id.is_empty() || service.port == 0 || host.is_empty() {
            tracing::debug!(id = %service.id, "skipping an instance without an id, address or port");
            continue;
        }
        out.push(Endpoint {
            id: service.id,
            host,
            port: service.port,
            tags: service.tags.unwrap_or_default(),
            meta: service.meta.unwrap_or_default(),
        });
    }
    out.sort();
    Ok(out)
}

/// Percent-encodes a path segment (service names and ids are usually plain already).
pub(crate) fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Consistency mode of reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    #[default]
    Default,
    Stale,
    Consistent,
}

/// A client for one Consul agent.
#[derive(Clone)]
pub struct ConsulClient {
    addr: String,
    token: Option<String>,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl fmt::Debug for ConsulClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulClient")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// One answer: status, the `X-Consul-Index` header if any, and the body.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) index: Option<u64>,
    pub(crate) body: Bytes,
}

impl ConsulClient {
    /// `addr` is the agent's HTTP address, `http://host:port`.
    pub fn new(addr: &str, token: Option<String>) -> Result<ConsulClient, ConsulError> {
        let trimmed = addr.trim_end_matches('/');
        let valid = trimmed
            .strip_prefix("http://")
            .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'));
        if !valid || trimmed.parse::<hyper::Uri>().is_err() {
            return Err(ConsulError::Address(addr.to_owned()));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(AGENT_CALL_TIMEOUT));
        connector.set_nodelay(true);
        Ok(ConsulClient {
            addr: trimmed.to_owned(),
            token: token.filter(|t| !t.is_empty()),
            http: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(90))
                .build(connector),
        })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// One call to the agent, answered with whatever status it has.
    pub(crate) async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Answer, ConsulError> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.addr));
        if let Some(token) = &self.token {
            req = req.header("X-Consul-Token", token);
        }
        if body.is_some() {
            req = req.header("Content-Type", "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ConsulError::Address(format!("{}{path}: {e}", self.addr)))?;
        let exchange = async {
            let res = self.http.request(req).await.map_err(|e| ConsulError::Transport {
                addr: self.addr.clone(),
                message: error_chain(&e),
            })?;
            let status = res.status();
            let index = res
                .headers()
                .get("X-Consul-Index")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let body = res
                .into_body()
                .collect()
                .await
                .map_err(|e| ConsulError::Transport {
                    addr: self.addr.clone(),
                    message: e.to_string(),
                })?
                .to_bytes();
            Ok(Answer { status, index, body })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ConsulError::Timeout {
                addr: self.addr.clone(),
                after: timeout,
            })?
    }

    /// One call to the agent; anything but a 2xx is a [`ConsulError::Status`].
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Answer, ConsulError> {
        let what = format!("{method} {}", path.split('?').next().unwrap_or(path));
        let answer = self.exchange(method, path, body, timeout).await?;
        if answer.status.is_success() {
            Ok(answer)
        } else {
            Err(self.failed(&answer, what))
        }
    }

    /// The error for a non-2xx answer to `what`: [`ConsulError::Denied`] for a 403, else
    /// [`ConsulError::Status`]. Consul's text is kept (shortened) for people, with the token cut
    /// out should Consul ever echo it.
    pub(crate) fn failed(&self, answer: &Answer, what: String) -> ConsulError {
        let mut body = String::from_utf8_lossy(&answer.body).into_owned();
        if let Some(token) = &self.token {
            body = body.replace(token.as_str(), "<redacted>");
        }
        let body: String = body.trim().chars().take(300).collect();
        match answer.status {
            StatusCode::FORBIDDEN => ConsulError::Denied {
                what,
                token_sent: self.token.is_some(),
                body,
            },
            status => ConsulError::Status {
                status: status.as_u16(),
                what,
                body,
            },
        }
    }

    /// Registers (or re-registers: the call is idempotent per id) a service instance with its
    /// gRPC health check.
    pub async fn register(&self, r: &Registration) -> Result<(), ConsulError> {
        let body = RegisterBody {
            id: &r.id,
            name: &r.name,
            address: &r.address,
            port: r.port,
            tags: &r.tags,
            meta: &r.meta,
            check: CheckBody {
                check_id: format!("service:{}", r.id),
                name: "gRPC health".to_owned(),
                grpc: r.grpc_check.clone(),
                grpc_use_tls: false,
                interval: go_duration(r.check_interval),
                timeout: go_duration(r.check_timeout),
                deregister_critical_service_after: go_duration(r.deregister_after),
                status: "passing",
            },
        };
        let json = serde_json::to_vec(&body).map_err(|e| ConsulError::Decode {
            what: "register".to_owned(),
            problem: e.to_string(),
        })?;
        self.send(
            Method::PUT,
            "/v1/agent/service/register",
            Some(json),
            AGENT_CALL_TIMEOUT,
        )
        .await
        .map(|_| ())
    }

    /// Removes an instance from this agent. An unknown id counts as done (Consul 1.8 answers
    /// 200, newer versions 404).
    pub async fn deregister(&self, id: &str) -> Result<(), ConsulError> {
        match self
            .send(
                Method::PUT,
                &format!("/v1/agent/service/deregister/{}", segment(id)),
                None,
                AGENT_CALL_TIMEOUT,
            )
            .await
        {
            Ok(_) | Err(ConsulError::Status { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Whether this agent still knows the instance (a restarted dev agent forgets everything).
    pub async fn is_registered(&self, id: &str) -> Result<bool, ConsulError> {
        match self
            .send(
                Method::GET,
                &format!("/v1/agent/service/{}", segment(id)),
                None,
                AGENT_CALL_TIMEOUT,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(ConsulError::Status { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// A blocking read of a service's passing instances: answers when the set's index moves past
    /// `index`, or after about `wait`. Returns the new index and the endpoints. `index` 0 answers
    /// at once.
    pub async fn healthy(
        &self,
        service: &str,
        tag: Option<&str>,
        index: u64,
        wait: Duration,
        consistency: Consistency,
    ) -> Result<(u64, Vec<Endpoint>), ConsulError> {
        let mut path = format!("/v1/health/service/{}?passing=1", segment(service));
        if index > 0 {
            path.push_str(&format!("&index={index}&wait={}s", wait.as_secs().max(1)));
        }
        if let Some(tag) = tag {
            path.push_str(&format!("&tag={}", segment(tag)));
        }
        match consistency {
            Consistency::Default => {}
            Consistency::Stale => path.push_str("&stale"),
            Consistency::Consistent => path.push_str("&consistent"),
        }
        let timeout = blocking_timeout(wait);
        let answer = self.send(Method::GET, &path, None, timeout).await?;
        let what = || format!("GET /v1/health/service/{service}");
        let new_index = answer.index.ok_or_else(|| ConsulError::Decode {
            what: what(),
            problem: "no X-Consul-Index header".to_owned(),
        })?;
        let endpoints = parse_health(&answer.body).map_err(|problem| ConsulError::Decode {
            what: what(),
            problem,
        })?;
        Ok((new_index, endpoints))
    }

    /// Whether Consul's ACLs let this client see `service`'s instances. Consul 1.8 quietly drops
    /// from a health answer every instance whose service or node the token may not read, so an
    /// empty answer may be a hidden one; the watch asks this before it believes an empty set.
    ///
    /// Two cheap reads, decided by status and shape, never by Consul's wording:
    /// `GET /v1/agent/health/service/name/<service>` answers 403 when the token may not read the
    /// service (any other status, 404 for "not on this agent" included, means it may); and
    /// `GET /v1/catalog/nodes` answers an empty list only when the token may read no node
    /// (every cluster has at least its servers).
    pub async fn check_visible(&self, service: &str) -> Result<(), ConsulError> {
        let token_sent = self.token.is_some();
        let path = format!("/v1/agent/health/service/name/{}", segment(service));
        let answer = self
            .exchange(Method::GET, &path, None, AGENT_CALL_TIMEOUT)
            .await?;
        if answer.status == StatusCode::FORBIDDEN {
            return Err(ConsulError::Filtered {
                service: service.to_owned(),
                token_sent,
                rule: format!("service {service:?} {{ policy = \"read\" }}"),
            });
        }
        let answer = self
            .send(Method::GET, "/v1/catalog/nodes", None, AGENT_CALL_TIMEOUT)
            .await?;
        let nodes: Vec<serde::de::IgnoredAny> =
            serde_json::from_slice(&answer.body).map_err(|e| ConsulError::Decode {
                what: "GET /v1/catalog/nodes".to_owned(),
                problem: e.to_string(),
            })?;
        if nodes.is_empty() {
            return Err(ConsulError::Filtered {
                service: service.to_owned(),
                token_sent,
                rule: "node_prefix \"\" { policy = \"read\" }".to_owned(),
            });
        }
        Ok(())
    }
}

/// The client timeout of a blocking query: the server holds it up to `wait + wait/16`.
pub fn blocking_timeout(wait: Duration) -> Duration {
    wait + wait / 16 + BLOCKING_MARGIN
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_answers_map_to_endpoints() {
        let body = br#"[
            {"Node": {"Node": "n1", "Address": "10.0.0.1"},
             "Service": {"ID": "b", "Service": "api", "Tags": null, "Address": "", "Port": 5001, "Meta": null},
             "Checks": [], "Extra": {"unknown": true}},
            {"Node": {"Address": "10.0.0.2"},
             "Service": {"ID": "a", "Service": "api", "Tags": ["v1"], "Address": "192.168.1.5", "Port": 5002,
                         "Meta": {"version": "0.1.0"}}},
            {"Node": {"Address": "10.0.0.3"}, "Service": {"ID": "no-port", "Address": "", "Port": 0}},
            {"Node": {"Address": "::1"}, "Service": {"ID": "v6", "Port": 7}}
        ]"#;
        let eps = parse_health(body).unwrap();
        let got: Vec<(String, String)> = eps.iter().map(|e| (e.id.clone(), e.authority())).collect();
        assert_eq!(
            got,
            vec![
                ("a".into(), "192.168.1.5:5002".into()),
                ("b".into(), "10.0.0.1:5001".into()),
                ("v6".into(), "[::1]:7".into())
            ]
        );
        assert_eq!(eps[0].tags, vec!["v1"]);
        assert_eq!(eps[0].meta.get("version").map(String::as_str), Some("0.1.0"));
        assert!(eps[1].tags.is_empty() && eps[1].meta.is_empty());
        assert_eq!(parse_health(b"[]").unwrap(), vec![]);
        assert_eq!(parse_health(b"null").unwrap(), vec![]);
        assert!(parse_health(b"{not json").is_err());
    }

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            index: None,
            body: Bytes::from(body.to_owned()),
        }
    }

    #[test]
    fn a_403_is_an_acl_refusal_whatever_consul_says() {
        let anonymous = ConsulClient::new("http://x:1", None).unwrap();
        let with_token = ConsulClient::new("http://x:1", Some("s3cret-token".into())).unwrap();
        // Decided by the status: the same verdict for Consul's two wordings and for any other.
        for body in [
            "ACL not found",
            "Permission denied: Missing service:write on svc",
            "?",
        ] {
            let e = anonymous.failed(&answer(403, body), "PUT /v1/agent/service/register".into());
            assert!(
                matches!(
                    &e,
                    ConsulError::Denied {
                        token_sent: false,
                        ..
                    }
                ),
                "{e:?}"
            );
            assert!(e.is_refusal());
            let text = e.to_string();
            assert!(text.contains("PUT /v1/agent/service/register"), "{text}");
            assert!(text.contains("no ACL token is configured"), "{text}");
            assert!(text.contains(body), "Consul's words are kept for people: {text}");
        }
        let e = with_token.failed(
            &answer(403, "ACL not found (token s3cret-token)"),
            "GET /v1/health/service/svc".into(),
        );
        assert!(
            matches!(&e, ConsulError::Denied { token_sent: true, .. }),
            "{e:?}"
        );
        let text = e.to_string();
        assert!(
            text.contains("the configured ACL token is unknown to Consul"),
            "{text}"
        );
        assert!(!text.contains("s3cret-token"), "the token is cut out: {text}");

        let e = with_token.failed(&answer(500, "No cluster leader"), "GET /x".into());
        assert!(matches!(&e, ConsulError::Status { status: 500, .. }), "{e:?}");
        assert!(!e.is_refusal());
        let hidden = ConsulError::Filtered {
            service: "user-service".into(),
            token_sent: false,
            rule: "service \"user-service\" { policy = \"read\" }".into(),
        };
        assert!(hidden.is_refusal());
        assert!(
            hidden.to_string().contains("no ACL token is configured"),
            "{hidden}"
        );
    }

    #[test]
    fn addresses_and_segments() {
        assert!(ConsulClient::new("http://127.0.0.1:8500", None).is_ok());
        assert!(ConsulClient::new("http://127.0.0.1:8500/", None).is_ok());
        for bad in ["127.0.0.1:8500", "https://x:1", "http://", "http://x:1/v1", ""] {
            assert!(ConsulClient::new(bad, None).is_err(), "{bad}");
        }
        assert_eq!(segment("user-service"), "user-service");
        assert_eq!(segment("a b/c?"), "a%20b%2Fc%3F");
        assert_eq!(blocking_timeout(Duration::from_secs(16)), Duration::from_secs(22));
        let dbg = format!(
            "{:?}",
            ConsulClient::new("http://x:1", Some("secret".into())).unwrap()
        );
        assert!(!dbg.contains("secret"), "{dbg}");
    }
}
