//! A real Consul for tests: [`ConsulAgent`] starts a dev agent (in-memory, single server) on free
//! ports in a scratch folder, waits for its leader, and can be `kill -9`ed and restarted on the
//! same ports. [`consul_binary`] finds the binary and panics, naming the install command, when
//! there is none: a test that needs Consul fails, it never skips.
//!
//! [`ConsulAgent::start_with_acl`] starts one with ACLs on and a default-deny policy (the
//! configuration [`acl_config`] writes, which Consul 1.8 accepts in dev mode), and
//! [`ConsulAgent::create_token`] makes a policy and a token from rules such as
//! [`service_rules`]'s, the least a shop process needs.
//!
//! Std only, like the rest of the crate: [`http_get`] and [`http_put`] (over [`crate::http`]) and a
//! JSON read with serde_json ([`parse`]) cover what tests ask of Consul's HTTP API.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{STOP_TIMEOUT, free_port};

/// How long a dev agent may take to elect itself leader. Usually well under a second.
pub const CONSUL_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What to run to get Consul, for panic messages.
const INSTALL_HINT: &str = "run `services/lib/discovery/scripts/get-consul` (or `just consul-install`) \
     to install it into .tools/consul/, or install Consul 1.8+ yourself and put `consul` on PATH \
     (or point SHOP_CONSUL_BIN at it)";

/// The `consul` binary for tests: `SHOP_CONSUL_BIN` if set, else `consul` on PATH, else the copy
/// `services/lib/discovery/scripts/get-consul` installs in `<repo>/.tools/consul/`. Panics when there
/// is none, so a missing Consul fails the test instead of skipping it.
pub fn consul_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SHOP_CONSUL_BIN").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            is_executable(&path),
            "SHOP_CONSUL_BIN={} is not an executable file; {INSTALL_HINT}",
            path.display()
        );
        return path;
    }
    if let Some(path) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("consul"))
        .find(|p| is_executable(p))
    {
        return path;
    }
    let local = repo_root().join(".tools/consul/root/usr/bin/consul");
    if is_executable(&local) {
        return local;
    }
    panic!(
        "Consul is needed by this test but was not found (not in SHOP_CONSUL_BIN, not on PATH, \
         not at {}); {INSTALL_HINT}",
        local.display()
    );
}

fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..");
    root.canonicalize().unwrap_or(root)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The ACL configuration of a test agent (HCL, as Consul 1.8.7 reads it): ACLs on, everything
/// denied that no token allows, tokens kept in memory only, and `master` as the bootstrap
/// (management) token. Consul 1.8 names it `master`; 1.11 and later call it
/// `initial_management`, which 1.8.7 refuses ("invalid config key acl.tokens.initial_management").
/// The agent's own token (its node's catalog entry and anti-entropy) is the master token too:
/// a test shortcut, where production gives the agent a token with `node "<name>" { policy =
/// "write" }`.
pub fn acl_config(master: &str) -> String {
    format!(
        r#"acl {{
  enabled = true
  default_policy = "deny"
  enable_token_persistence = false
  tokens {{
    master = "{master}"
    agent = "{master}"
  }}
}}
"#
    )
}

/// The least a shop process needs from Consul's ACLs, in Consul's policy language (one rule a
/// line; docs/discovery.md, "ACL tokens", explains each):
///
/// - `register`: the service it registers as, `write` (register, check it is still known,
///   deregister);
/// - `watch`: the services whose healthy instances it follows, `read`, plus `read` on the nodes
///   they run on (`node_prefix ""`: Consul drops from a health answer every instance on a node
///   the token may not read);
/// - `lock`: the KV key of its session lock, `write`, and `write` on sessions
///   (`session_prefix ""`; `session "<node name>"` when every node is known).
pub fn service_rules(register: Option<&str>, watch: &[&str], lock: Option<&str>) -> String {
    let mut rules = Vec::new();
    if let Some(name) = register {
        rules.push(format!("service \"{name}\" {{ policy = \"write\" }}"));
    }
    for name in watch {
        rules.push(format!("service \"{name}\" {{ policy = \"read\" }}"));
    }
    if !watch.is_empty() {
        rules.push("node_prefix \"\" { policy = \"read\" }".to_owned());
    }
    if let Some(key) = lock {
        rules.push("session_prefix \"\" { policy = \"write\" }".to_owned());
        rules.push(format!("key \"{key}\" {{ policy = \"write\" }}"));
    }
    rules.join("\n")
}

/// A running Consul dev agent. Dropping it kills it (SIGKILL).
pub struct ConsulAgent {
    child: Option<Child>,
    binary: PathBuf,
    /// HTTP, Serf LAN, Serf WAN and server (RPC/Raft) ports, in that order.
    ports: [u16; 4],
    http_port: u16,
    node: String,
    log_path: PathBuf,
    /// With ACLs on: the master token, and the configuration file that sets it.
    acl: Option<(String, PathBuf)>,
}

impl ConsulAgent {
    /// Starts a dev agent on free ports, logging to `consul-<http port>.log` in `scratch_dir`,
    /// and waits (up to [`CONSUL_READY_TIMEOUT`]) until it has a leader and its node is in the
    /// catalog, passing `serfHealth`. DNS and gRPC are off.
    pub fn start(scratch_dir: &Path) -> ConsulAgent {
        ConsulAgent::launch(scratch_dir, None)
    }

    /// Like [`ConsulAgent::start`], with ACLs on and a default-deny policy ([`acl_config`]), and
    /// ready only once its ACLs are (the master token answers). Returns the agent and its master
    /// token, which this agent's own helpers ([`ConsulAgent::passing_ids`],
    /// [`ConsulAgent::admin`], ...) send; anything else gets only what a token allows.
    pub fn start_with_acl(scratch_dir: &Path) -> (ConsulAgent, String) {
        let master = random_uuid();
        let agent = ConsulAgent::launch(scratch_dir, Some(master.clone()));
        (agent, master)
    }

    fn launch(scratch_dir: &Path, master: Option<String>) -> ConsulAgent {
        let binary = consul_binary();
        // A port found free can be taken by someone else before Consul binds it; try again with
        // fresh ports when the agent dies at start-up.
        let mut last_log = String::new();
        for _ in 0..3 {
            let ports = four_free_ports();
            let acl = master.as_ref().map(|m| {
                let file = scratch_dir.join(format!("consul-{}-acl.hcl", ports[0]));
                std::fs::write(&file, acl_config(m)).unwrap();
                (m.clone(), file)
            });
            let mut agent = ConsulAgent {
                child: None,
                binary: binary.clone(),
                ports,
                http_port: ports[0],
                node: format!("testkit-{}", ports[0]),
                log_path: scratch_dir.join(format!("consul-{}.log", ports[0])),
                acl,
            };
            match agent.spawn_and_wait() {
                Ok(()) => return agent,
                Err(Exited) => last_log = agent.logs(),
            }
        }
        panic!("Consul did not start (three tries on fresh ports); its last log:\n{last_log}");
    }

    /// `127.0.0.1:<http port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    /// How tests launch a service against this agent: `program` on port 0, its data in
    /// `<scratch>/data`, registered here with a 1 s health check (so changes show quickly).
    pub fn service(
        &self,
        program: impl Into<PathBuf>,
        name: &str,
        scratch: &crate::Scratch,
    ) -> crate::Launch {
        crate::Launch::new(program, name, scratch.path())
            .arg("--port")
            .arg("0")
            .arg("--data-dir")
            .arg(scratch.join("data").to_str().unwrap())
            .arg("--consul")
            .arg(self.url())
            .arg("--set")
            .arg("consul.check_interval=1s")
    }

    /// `http://127.0.0.1:<http port>`, the address a Consul client is given.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// HTTP, Serf LAN, Serf WAN and server ports, in that order.
    pub fn ports(&self) -> [u16; 4] {
        self.ports
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the agent wrote so far (all runs: the log is appended to across restarts).
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The process id, or 0 when the agent is not running.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// The leader's address as `/v1/status/leader` reports it (`127.0.0.1:<server port>`), or
    /// `None` while there is none or the agent does not answer.
    pub fn leader(&self) -> Option<String> {
        let (status, body) = http_get(&self.addr(), "/v1/status/leader")?;
        if status != 200 {
            return None;
        }
        serde_json::from_str::<Json>(&body)
            .ok()?
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    }

    /// `kill -9`: no leave, no clean-up. A dev agent keeps nothing, so a restart starts empty.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit (SIGKILL after [`STOP_TIMEOUT`]).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let started = Instant::now();
        while child.try_wait().ok().flatten().is_none() {
            if started.elapsed() > STOP_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("Consul did not stop within {STOP_TIMEOUT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the agent again on the same ports (killing it first if it still runs) and waits
    /// for its leader.
    pub fn restart(&mut self) {
        self.kill9();
        if self.spawn_and_wait().is_err() {
            panic!(
                "Consul did not restart on ports {:?}; its log:\n{}",
                self.ports,
                self.logs()
            );
        }
    }

    /// The master token when ACLs are on.
    pub fn master_token(&self) -> Option<&str> {
        self.acl.as_ref().map(|(m, _)| m.as_str())
    }

    /// The node name the agent runs as (`testkit-<http port>`).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// One call to the agent's HTTP API with the master token (none when ACLs are off):
    /// `(status, body)`. Panics when the agent does not answer.
    pub fn admin(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let mut headers = Vec::new();
        if let Some(master) = self.master_token() {
            headers.push(("X-Consul-Token", master));
        }
        let r = crate::http::request(&self.addr(), method, path, &headers, body.map(str::as_bytes))
            .unwrap_or_else(|| panic!("{method} {path} on {}: no answer", self.addr()));
        (r.status, r.body)
    }

    /// Makes an ACL policy `name` with `rules` (e.g. [`service_rules`]) and a token holding
    /// just that policy (`PUT /v1/acl/policy`, `PUT /v1/acl/token`); returns the token's secret.
    /// Panics unless the agent runs with ACLs ([`ConsulAgent::start_with_acl`]).
    pub fn create_token(&self, name: &str, rules: &str) -> String {
        assert!(
            self.acl.is_some(),
            "create_token needs an agent started with ACLs (ConsulAgent::start_with_acl)"
        );
        let policy = format!(
            r#"{{"Name":{},"Description":"shop-testkit","Rules":{}}}"#,
            json_string(name),
            json_string(rules)
        );
        let (status, body) = self.admin("PUT", "/v1/acl/policy", Some(&policy));
        assert_eq!(status, 200, "PUT /v1/acl/policy {name}: {body}");
        let token = format!(
            r#"{{"Description":{},"Policies":[{{"Name":{}}}]}}"#,
            json_string(name),
            json_string(name)
        );
        let (status, body) = self.admin("PUT", "/v1/acl/token", Some(&token));
        assert_eq!(status, 200, "PUT /v1/acl/token {name}: {body}");
        parse(&body)
            .as_ref()
            .and_then(|j| j.get("SecretID")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("PUT /v1/acl/token {name}: no SecretID in the answer"))
    }

    /// IDs of the instances of `service` that pass all their checks
    /// (`GET /v1/health/service/<service>?passing`), sorted.
    pub fn passing_ids(&self, service: &str) -> Vec<String> {
        let path = format!("/v1/health/service/{service}?passing");
        let body = self.get_ok(&path);
        let json = parse(&body).unwrap_or_else(|| panic!("GET {path}: not JSON: {body}"));
        let mut ids = health_service_ids(&json);
        ids.sort();
        ids
    }

    /// IDs of the services registered with this agent (`GET /v1/agent/services`), sorted.
    pub fn agent_service_ids(&self) -> Vec<String> {
        let body = self.get_ok("/v1/agent/services");
        parse(&body)
            .as_ref()
            .and_then(Json::as_object)
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_else(|| panic!("GET /v1/agent/services: not a JSON object: {body}"))
    }

    /// A GET (with the master token, when ACLs are on) that must answer 200; panics (with the
    /// agent's address) otherwise.
    fn get_ok(&self, path: &str) -> String {
        match self.admin("GET", path, None) {
            (200, body) => body,
            (status, body) => panic!("GET {path} on {}: {status} {body}", self.addr()),
        }
    }

    /// Ready: a leader; with ACLs on, ACLs bootstrapped (the master token is known; the leader
    /// sets ACLs up just after it is elected); and the agent's node in the catalog with its
    /// `serfHealth` check passing (the leader adds it a moment later, and a session tied to
    /// `serfHealth` cannot be made before: "Missing check 'serfHealth' registration").
    fn ready(&self) -> bool {
        if self.leader().is_none() {
            return false;
        }
        let mut headers = Vec::new();
        if let Some(master) = self.master_token() {
            headers.push(("X-Consul-Token", master));
            let acl = crate::http::request(&self.addr(), "GET", "/v1/acl/token/self", &headers, None);
            if acl.is_none_or(|r| r.status != 200) {
                return false;
            }
        }
        let path = format!("/v1/health/node/{}", self.node);
        crate::http::request(&self.addr(), "GET", &path, &headers, None)
            .filter(|r| r.status == 200)
            .and_then(|r| parse(&r.body))
            .is_some_and(|checks| {
                checks.as_array().into_iter().flatten().any(|c| {
                    c.get("CheckID").and_then(Json::as_str) == Some("serfHealth")
                        && c.get("Status").and_then(Json::as_str) == Some("passing")
                })
            })
    }

    fn spawn_and_wait(&mut self) -> Result<(), Exited> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let [http, serf_lan, serf_wan, server] = self.ports;
        let mut command = Command::new(&self.binary);
        command.arg("agent");
        if let Some((_, file)) = &self.acl {
            command.arg(format!("-config-file={}", file.display()));
        }
        let child = command
            .arg("-dev")
            .arg(format!("-node={}", self.node))
            .args(["-bind=127.0.0.1", "-client=127.0.0.1"])
            .arg(format!("-http-port={http}"))
            .args(["-dns-port=-1", "-grpc-port=-1"])
            .arg(format!("-serf-lan-port={serf_lan}"))
            .arg(format!("-serf-wan-port={serf_wan}"))
            .arg(format!("-server-port={server}"))
            .arg("-log-level=info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.child = Some(child);

        let started = Instant::now();
        loop {
            if self.ready() {
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .is_none_or(|c| c.try_wait().ok().flatten().is_some());
            if exited {
                self.child = None;
                return Err(Exited);
            }
            if started.elapsed() > CONSUL_READY_TIMEOUT {
                self.kill9();
                panic!(
                    "Consul on {} was not ready (a leader, the master token with ACLs, its node \
                     passing serfHealth) within {CONSUL_READY_TIMEOUT:?}; its log:\n{}",
                    self.addr(),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ConsulAgent {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The agent process exited before it had a leader.
struct Exited;

/// A random UUID-shaped token (from the process's random hasher keys and the clock: unique per
/// test agent, not a secret worth more than that).
fn random_uuid() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut words = [0u64; 2];
    for (i, w) in words.iter_mut().enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(i);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        *w = h.finish();
    }
    let hex = format!("{:016x}{:016x}", words[0], words[1]);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

fn four_free_ports() -> [u16; 4] {
    loop {
        let ports = [free_port(), free_port(), free_port(), free_port()];
        let mut sorted = ports;
        sorted.sort_unstable();
        if sorted.windows(2).all(|w| w[0] != w[1]) {
            return ports;
        }
    }
}

/// `GET path` over HTTP to `addr` (`host:port`): `(status, body)`, or `None` when nothing
/// answers or the answer is not HTTP.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    http_call(addr, "GET", path, None)
}

/// `PUT path` with `body` over HTTP to `addr` (`host:port`): `(status, body)`, or `None`
/// when nothing answers or the answer is not HTTP.
pub fn http_put(addr: &str, path: &str, body: &str) -> Option<(u16, String)> {
    http_call(addr, "PUT", path, Some(body))
}

fn http_call(addr: &str, method: &str, path: &str, body: Option<&str>) -> Option<(u16, String)> {
    let r = crate::http::request(addr, method, path, &[], body.map(str::as_bytes))?;
    Some((r.status, r.body))
}

/// A JSON value, as Consul's answers are read in tests.
pub use serde_json::Value as Json;

/// A whole JSON document; `None` if it is not JSON.
pub fn parse(text: &str) -> Option<Json> {
    serde_json::from_str(text).ok()
}

/// `Service.ID` of each entry of a `/v1/health/service/<name>` answer (an array of
/// `{"Node": .., "Service": {"ID": .., ..}, "Checks": [..]}`).
fn health_service_ids(json: &Json) -> Vec<String> {
    json.as_array()
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.get("Service")?.get("ID")?.as_str())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn reads_service_ids_from_a_health_answer() {
        // The shape Consul 1.8 answers, trimmed; "Kind" comes first for proxies, nesting in
        // "Meta" and "Checks" must not confuse the reader.
        let body = r#"[
          {"Node":{"ID":"n1","Node":"testkit-1","Meta":{"ID":"not-this"}},
           "Service":{"ID":"t1","Service":"probe","Tags":[],"Meta":{"ID":"nor-this"},"Port":1234},
           "Checks":[{"CheckID":"service:t1","ServiceID":"t1","Status":"passing"}]},
          {"Node":{"ID":"n1"},
           "Service":{"Kind":"connect-proxy","ID":"t2-proxy","Service":"probe"},
           "Checks":[]}
        ]"#;
        assert_eq!(health_service_ids(&parse(body).unwrap()), ["t1", "t2-proxy"]);
        assert_eq!(health_service_ids(&parse("[]").unwrap()), Vec::<String>::new());
    }

    #[test]
    fn json_strings_round_trip() {
        for s in [
            "",
            "plain",
            "service \"a\" { policy = \"write\" }\nkey \"k\" {}",
            "tab\tback\\slash\u{1}é",
        ] {
            assert_eq!(parse(&json_string(s)).unwrap().as_str(), Some(s), "{s:?}");
        }
        let id = random_uuid();
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{id}");
        assert_ne!(id, random_uuid());
    }

    #[test]
    fn rules_name_only_what_is_asked_for() {
        assert_eq!(
            service_rules(
                Some("order-service"),
                &["user-service"],
                Some("shop/order-service/recovery")
            ),
            "service \"order-service\" { policy = \"write\" }\n\
             service \"user-service\" { policy = \"read\" }\n\
             node_prefix \"\" { policy = \"read\" }\n\
             session_prefix \"\" { policy = \"write\" }\n\
             key \"shop/order-service/recovery\" { policy = \"write\" }"
        );
        assert_eq!(
            service_rules(Some("user-service"), &[], None),
            "service \"user-service\" { policy = \"write\" }"
        );
        assert!(acl_config("m").contains("master = \"m\""));
    }

    #[test]
    fn reads_agent_service_ids() {
        let body = r#"{"t2":{"ID":"t2","Service":"probe"},"t1":{"ID":"t1","Service":"probe"}}"#;
        assert_eq!(
            parse(body)
                .unwrap()
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["t1", "t2"]
        );
    }

    #[test]
    fn nothing_listening_is_no_answer() {
        let port = free_port();
        assert_eq!(http_get(&format!("127.0.0.1:{port}"), "/"), None);
        assert_eq!(http_get("not an address", "/"), None);
    }

    #[test]
    fn talks_http_to_a_tiny_server() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0; 1024];
            // Read until the whole body (Content-Length: 7) has arrived.
            while !String::from_utf8_lossy(&request).ends_with("\r\n\r\n{\"a\":1}") {
                let n = conn.read(&mut buf).unwrap();
                assert!(n > 0, "client closed early");
                request.extend_from_slice(&buf[..n]);
            }
            conn.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\ntrue")
                .unwrap();
            String::from_utf8(request).unwrap()
        });
        assert_eq!(
            http_put(&addr, "/v1/x", "{\"a\":1}"),
            Some((200, "true".to_owned()))
        );
        let request = server.join().unwrap();
        assert!(request.starts_with("PUT /v1/x HTTP/1.1\r\n"), "{request}");
        assert!(request.contains("Content-Length: 7\r\n"), "{request}");
    }
}
