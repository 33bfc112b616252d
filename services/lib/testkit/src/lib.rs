//! Dev-only helpers for the shop's integration tests: a scratch folder per test, free ports, and
//! real binaries started and stopped like an operator would (ready line, SIGTERM, `kill -9`).
//!
//! [`tokens::TokenMint`] signs test tokens with a throwaway key, for services other than the
//! user service.
//!
//! [`consul::ConsulAgent`] starts a real Consul dev agent on free ports (kill -9, restart on the
//! same ports), also with ACLs on and default-deny, with tokens made from the rules a shop
//! process needs; a missing Consul fails the test, with the install command in the message.
//!
//! Readiness is read from the service's ready line (`<name> ready on <addr>`), never guessed
//! with a sleep. A process's stdout and stderr are kept in files in its scratch folder, so tests
//! can assert on log lines and a failing test leaves them behind for reading.

#![allow(clippy::unwrap_used, reason = "test support: a panic is a clear test failure")]

pub mod consul;
pub mod grpc;
pub mod http;
pub mod tokens;

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a service may take to print its ready line. Generous: a cold debug binary on a
/// loaded two-core CI machine can take seconds (argon2 and key set-up included).
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a graceful stop may take before the test fails.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Another workspace binary beside `own` (a test's `CARGO_BIN_EXE_*`): integration tests of one
/// service start the others. `cargo test --workspace` (what `just test` runs) builds them all.
pub fn sibling_binary(own: &str, name: &str) -> PathBuf {
    let path = Path::new(own).with_file_name(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo build --workspace` (or `just test`, which builds everything) first",
        path.display()
    );
    path
}

/// A port that was free a moment ago (bind to 0, read, release).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh folder for one test, removed when the test passes and kept (its path printed) when it
/// fails.
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = std::env::var_os("CARGO_TARGET_TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let path = base.join(format!("shop-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Scratch { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test files kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Runs `user-service issue-service-token` (`user_bin`) for `service` against the keys in
/// `<scratch>/data`, writing the token where that service reads it by default:
/// `<scratch>/data/keys/<service>.token`.
pub fn issue_service_token(user_bin: &Path, scratch: &Scratch, service: &str) {
    let out = scratch.join(&format!("data/keys/{service}.token"));
    let (status, _, err) = Launch::new(user_bin, "issue-token", scratch.path())
        .arg("issue-service-token")
        .arg("--service")
        .arg(service)
        .arg("--data-dir")
        .arg(scratch.join("data").to_str().unwrap())
        .arg("--out")
        .arg(out.to_str().unwrap())
        .run(None);
    assert!(status.success(), "issue-service-token failed: {err}");
}

/// `product-service audit` (`product_bin`) on `<scratch>/data`: true when, for every product,
/// stock + units held = stock set by admins; and what it printed.
pub fn product_audit(product_bin: &Path, scratch: &Scratch) -> (bool, String) {
    let (status, out, err) = Launch::new(product_bin, "audit", scratch.path())
        .arg("audit")
        .arg("--data-dir")
        .arg(scratch.join("data").to_str().unwrap())
        .run(None);
    (
        status.success() && out.contains(" 0 unbalanced"),
        format!("{out}{err}"),
    )
}

/// How to start a service binary.
#[derive(Debug, Clone)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Where stdout/stderr logs go (appended, so restarts keep one history).
    pub log_dir: PathBuf,
    pub name: String,
}

impl Launch {
    pub fn new(program: impl Into<PathBuf>, name: &str, log_dir: &Path) -> Launch {
        Launch {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            log_dir: log_dir.to_owned(),
            name: name.to_owned(),
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Launch {
        self.args.push(a.into());
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Launch {
        self.env.push((k.to_owned(), v.to_owned()));
        self
    }

    pub fn stderr_path(&self) -> PathBuf {
        self.log_dir.join(format!("{}.stderr.log", self.name))
    }

    /// Starts the process and waits for its ready line.
    pub fn start(&self) -> Process {
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(self.stderr_path())
            .unwrap();
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program.display()));

        // A thread copies stdout to a file and reports the ready line's address.
        let stdout = child.stdout.take().unwrap();
        let mut copy = File::options()
            .create(true)
            .append(true)
            .open(self.log_dir.join(format!("{}.stdout.log", self.name)))
            .unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(copy, "{line}");
                if let Some((_, addr)) = line.split_once(" ready on ") {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
        });
        let addr = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(a) => a.parse::<SocketAddr>().unwrap(),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                panic!(
                    "{} did not print its ready line within {READY_TIMEOUT:?} (exit: {status:?}); stderr:\n{}",
                    self.name,
                    std::fs::read_to_string(self.stderr_path()).unwrap_or_default()
                );
            }
        };
        Process {
            child: Some(child),
            addr,
            stderr_path: self.stderr_path(),
        }
    }

    /// Runs the program to completion (for subcommands and `--check`) and returns its exit
    /// status, stdout and stderr.
    pub fn run(&self, stdin: Option<&str>) -> (ExitStatus, String, String) {
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        let out = child.wait_with_output().unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// A running service. Dropping it kills it (SIGKILL) if it is still running.
pub struct Process {
    child: Option<Child>,
    addr: SocketAddr,
    stderr_path: PathBuf,
}

impl Process {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, for a gRPC client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Everything the process wrote to stderr (its logs) so far. Services write logs from a
    /// background thread, a moment after the event: this waits until the file has stopped
    /// growing for a short while (at most two seconds) before reading it.
    pub fn logs(&self) -> String {
        let size = || std::fs::metadata(&self.stderr_path).map_or(0, |m| m.len());
        let started = Instant::now();
        let mut last = size();
        let mut still_since = Instant::now();
        while still_since.elapsed() < Duration::from_millis(30) && started.elapsed() < Duration::from_secs(2)
        {
            std::thread::sleep(Duration::from_millis(5));
            let now = size();
            if now != last {
                last = now;
                still_since = Instant::now();
            }
        }
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// `kill -9`: no chance to clean up, like a crash or an OOM kill.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal by name (`TERM`, `INT`, `STOP`, `CONT`, ...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// SIGTERM, then waits for the exit and returns its status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        let mut child = self.child.take().unwrap();
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if started.elapsed() > STOP_TIMEOUT {
                let _ = child.kill();
                panic!("process did not stop within {STOP_TIMEOUT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
    }
}
