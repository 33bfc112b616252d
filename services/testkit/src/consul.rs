//! A real Consul for tests: [`ConsulAgent`] starts a dev agent (in-memory, single server) on free
//! ports in a scratch folder, waits for its leader, and can be `kill -9`ed and restarted on the
//! same ports. [`consul_binary`] finds the binary and panics, naming the install command, when
//! there is none: a test that needs Consul fails, it never skips.
//!
//! Std only, like the rest of the crate: [`http_get`] and [`http_put`] (over [`crate::http`]) and a
//! small JSON reader ([`Json`]) cover what tests ask of Consul's HTTP API.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{STOP_TIMEOUT, free_port};

/// How long a dev agent may take to elect itself leader. Usually well under a second.
pub const CONSUL_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What to run to get Consul, for panic messages.
const INSTALL_HINT: &str = "run `services/discovery/scripts/get-consul` (or `just consul-install`) \
     to install it into .tools/consul/, or install Consul 1.8+ yourself and put `consul` on PATH \
     (or point SHOP_CONSUL_BIN at it)";

/// The `consul` binary for tests: `SHOP_CONSUL_BIN` if set, else `consul` on PATH, else the copy
/// `services/discovery/scripts/get-consul` installs in `<repo>/.tools/consul/`. Panics when there
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
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
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
}

impl ConsulAgent {
    /// Starts a dev agent on free ports, logging to `consul-<http port>.log` in `scratch_dir`,
    /// and waits (up to [`CONSUL_READY_TIMEOUT`]) until it has a leader. DNS and gRPC are off.
    pub fn start(scratch_dir: &Path) -> ConsulAgent {
        let binary = consul_binary();
        // A port found free can be taken by someone else before Consul binds it; try again with
        // fresh ports when the agent dies at start-up.
        let mut last_log = String::new();
        for _ in 0..3 {
            let ports = four_free_ports();
            let mut agent = ConsulAgent {
                child: None,
                binary: binary.clone(),
                ports,
                http_port: ports[0],
                node: format!("testkit-{}", ports[0]),
                log_path: scratch_dir.join(format!("consul-{}.log", ports[0])),
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

    /// `http://127.0.0.1:<http port>`, the address a Consul client is given.
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
        Json::parse(&body)?
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

    /// IDs of the instances of `service` that pass all their checks
    /// (`GET /v1/health/service/<service>?passing`), sorted.
    pub fn passing_ids(&self, service: &str) -> Vec<String> {
        let path = format!("/v1/health/service/{service}?passing");
        let body = self.get_ok(&path);
        let json = Json::parse(&body).unwrap_or_else(|| panic!("GET {path}: not JSON: {body}"));
        let mut ids = health_service_ids(&json);
        ids.sort();
        ids
    }

    /// IDs of the services registered with this agent (`GET /v1/agent/services`), sorted.
    pub fn agent_service_ids(&self) -> Vec<String> {
        let body = self.get_ok("/v1/agent/services");
        Json::parse(&body)
            .as_ref()
            .and_then(Json::keys)
            .unwrap_or_else(|| panic!("GET /v1/agent/services: not a JSON object: {body}"))
    }

    /// A GET that must answer 200; panics (with the agent's address) otherwise.
    fn get_ok(&self, path: &str) -> String {
        match http_get(&self.addr(), path) {
            Some((200, body)) => body,
            Some((status, body)) => panic!("GET {path} on {}: {status} {body}", self.addr()),
            None => panic!("GET {path} on {}: no answer", self.addr()),
        }
    }

    fn spawn_and_wait(&mut self) -> Result<(), Exited> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let [http, serf_lan, serf_wan, server] = self.ports;
        let child = Command::new(&self.binary)
            .arg("agent")
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
            if self.leader().is_some() {
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
                    "Consul on {} had no leader within {CONSUL_READY_TIMEOUT:?}; its log:\n{}",
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

/// `Service.ID` of each entry of a `/v1/health/service/<name>` answer (an array of
/// `{"Node": .., "Service": {"ID": .., ..}, "Checks": [..]}`).
fn health_service_ids(json: &Json) -> Vec<String> {
    json.as_array()
        .unwrap_or_default()
        .iter()
        .filter_map(|entry| entry.get("Service")?.get("ID")?.as_str())
        .map(str::to_owned)
        .collect()
}

/// A parsed JSON value: just enough to read Consul's answers in tests. Numbers keep their text.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Json>),
    Object(BTreeMap<String, Json>),
}

impl Json {
    /// Parses a whole JSON document (surrounding whitespace allowed); `None` if it is not JSON.
    pub fn parse(text: &str) -> Option<Json> {
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
        };
        let value = p.value(0)?;
        p.ws();
        (p.i == p.s.len()).then_some(value)
    }

    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(m) => m.get(key),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Json]> {
        match self {
            Json::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The keys of an object, sorted.
    pub fn keys(&self) -> Option<Vec<String>> {
        match self {
            Json::Object(m) => Some(m.keys().cloned().collect()),
            _ => None,
        }
    }
}

/// Deeper nesting than this is refused rather than risking the stack.
const MAX_DEPTH: usize = 128;

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        self.ws();
        if self.s.get(self.i) == Some(&b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn literal(&mut self, word: &str, value: Json) -> Option<Json> {
        let end = self.i + word.len();
        (self.s.get(self.i..end)? == word.as_bytes()).then(|| {
            self.i = end;
            value
        })
    }

    fn value(&mut self, depth: usize) -> Option<Json> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.ws();
        match *self.s.get(self.i)? {
            b'n' => self.literal("null", Json::Null),
            b't' => self.literal("true", Json::Bool(true)),
            b'f' => self.literal("false", Json::Bool(false)),
            b'"' => self.string().map(Json::String),
            b'[' => {
                self.i += 1;
                let mut items = Vec::new();
                if self.eat(b']') {
                    return Some(Json::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    if self.eat(b']') {
                        return Some(Json::Array(items));
                    }
                    if !self.eat(b',') {
                        return None;
                    }
                }
            }
            b'{' => {
                self.i += 1;
                let mut members = BTreeMap::new();
                if self.eat(b'}') {
                    return Some(Json::Object(members));
                }
                loop {
                    self.ws();
                    let key = self.string()?;
                    if !self.eat(b':') {
                        return None;
                    }
                    members.insert(key, self.value(depth + 1)?);
                    if self.eat(b'}') {
                        return Some(Json::Object(members));
                    }
                    if !self.eat(b',') {
                        return None;
                    }
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = self.i;
                while self
                    .s
                    .get(self.i)
                    .is_some_and(|b| b.is_ascii_digit() || b"+-.eE".contains(b))
                {
                    self.i += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.i]).ok()?;
                text.parse::<f64>().ok()?;
                Some(Json::Number(text.to_owned()))
            }
            _ => None,
        }
    }

    /// A string starting at the current `"`, escapes decoded.
    fn string(&mut self) -> Option<String> {
        if self.s.get(self.i) != Some(&b'"') {
            return None;
        }
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let b = *self.s.get(self.i)?;
            self.i += 1;
            match b {
                b'"' => return String::from_utf8(out).ok(),
                b'\\' => {
                    let e = *self.s.get(self.i)?;
                    self.i += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        _ => return None,
                    };
                    let mut buf = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                0..0x20 => return None,
                _ => out.push(b),
            }
        }
    }

    /// The `XXXX` after `\u` (a surrogate pair takes two escapes).
    fn unicode_escape(&mut self) -> Option<char> {
        let first = self.hex4()?;
        if (0xD800..0xDC00).contains(&first) {
            if self.s.get(self.i..self.i + 2)? != b"\\u" {
                return None;
            }
            self.i += 2;
            let second = self.hex4()?;
            if !(0xDC00..0xE000).contains(&second) {
                return None;
            }
            char::from_u32(0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00))
        } else {
            char::from_u32(first)
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = std::str::from_utf8(self.s.get(self.i..self.i + 4)?).ok()?;
        let n = u32::from_str_radix(digits, 16).ok()?;
        self.i += 4;
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn parses_json() {
        let j = Json::parse(
            r#" {"a": [1, -2.5e3, true, false, null], "b": {"c": "d\"\\\/\n\u00e9\ud83d\ude00"}} "#,
        )
        .unwrap();
        assert_eq!(
            j.get("a").unwrap().as_array().unwrap(),
            &[
                Json::Number("1".to_owned()),
                Json::Number("-2.5e3".to_owned()),
                Json::Bool(true),
                Json::Bool(false),
                Json::Null
            ]
        );
        assert_eq!(
            j.get("b").unwrap().get("c").unwrap().as_str(),
            Some("d\"\\/\n\u{e9}\u{1F600}")
        );
        assert_eq!(j.keys().unwrap(), ["a", "b"]);
        assert_eq!(Json::parse("[]"), Some(Json::Array(Vec::new())));
        assert_eq!(Json::parse("{}").unwrap().keys().unwrap(), Vec::<String>::new());
        assert_eq!(Json::parse("\"\"").unwrap().as_str(), Some(""));
        for bad in [
            "",
            "[",
            "[1,]",
            "{\"a\"}",
            "{\"a\":1,}",
            "{a:1}",
            "tru",
            "\"x",
            "1 2",
            "\"\\q\"",
            "\"\\ud800\"",
            "-",
            "\"a\nb\"",
            "No cluster leader",
        ] {
            assert_eq!(Json::parse(bad), None, "{bad:?} should not parse");
        }
        assert_eq!(Json::parse(&"[".repeat(1000)), None);
    }

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
        assert_eq!(
            health_service_ids(&Json::parse(body).unwrap()),
            ["t1", "t2-proxy"]
        );
        assert_eq!(
            health_service_ids(&Json::parse("[]").unwrap()),
            Vec::<String>::new()
        );
    }

    #[test]
    fn reads_agent_service_ids() {
        let body = r#"{"t2":{"ID":"t2","Service":"probe"},"t1":{"ID":"t1","Service":"probe"}}"#;
        assert_eq!(Json::parse(body).unwrap().keys().unwrap(), ["t1", "t2"]);
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
