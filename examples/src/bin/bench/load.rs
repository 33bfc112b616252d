//! The load generators: `wrk` for every HTTP row (one client for all of them) and `h2load` for
//! direct gRPC, both from Debian; their output read back into numbers.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// What one load run measured.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    pub requests: u64,
    pub elapsed: Duration,
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    /// Non-2xx answers, socket errors, failed gRPC calls.
    pub failures: u64,
}

impl Measured {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// An HTTP request for wrk: method, path, headers and body.
#[derive(Debug, Clone, Default)]
pub struct HttpLoad {
    pub url: String,
    pub method: &'static str,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    /// Bearer tokens to take turns with, one per request (none: `headers` only).
    pub tokens: Vec<String>,
    pub connections: usize,
}

fn lua_string(s: &str) -> String {
    format!("{s:?}")
}

/// The wrk script for a load: method, body, headers, and tokens in turn.
fn script(load: &HttpLoad) -> String {
    let mut s = format!("wrk.method = {}\n", lua_string(load.method));
    if let Some(body) = &load.body {
        s.push_str(&format!("wrk.body = {}\n", lua_string(body)));
    }
    for (k, v) in &load.headers {
        s.push_str(&format!("wrk.headers[{}] = {}\n", lua_string(k), lua_string(v)));
    }
    if !load.tokens.is_empty() {
        let list: Vec<String> = load
            .tokens
            .iter()
            .map(|t| lua_string(&format!("Bearer {t}")))
            .collect();
        s.push_str(&format!(
            "local tokens = {{{}}}\nlocal n = 0\nrequest = function()\n  n = n % #tokens + 1\n  wrk.headers[\"Authorization\"] = tokens[n]\n  return wrk.format()\nend\n",
            list.join(", ")
        ));
    }
    s
}

/// Runs wrk (one thread) against `load` for `seconds`.
pub fn wrk(dir: &Path, load: &HttpLoad, seconds: u64) -> Result<Measured, String> {
    let path = dir.join("load.lua");
    std::fs::write(&path, script(load)).map_err(|e| e.to_string())?;
    let run = |secs: u64| -> Result<String, String> {
        let out = Command::new("wrk")
            .args([
                "-t1",
                "-c",
                &load.connections.to_string(),
                "-d",
                &format!("{secs}s"),
                "--latency",
                "-s",
            ])
            .arg(&path)
            .arg(&load.url)
            .output()
            .map_err(|e| format!("cannot run wrk ({e}); install it: apt-get install wrk"))?;
        if !out.status.success() {
            return Err(format!("wrk: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    parse_wrk(&run(seconds)?)
}

fn duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = text.split_at(split);
    let n: f64 = n.parse().ok()?;
    let secs = match unit {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

pub fn parse_wrk(out: &str) -> Result<Measured, String> {
    let mut m = Measured::default();
    for line in out.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", d] => m.p50 = duration(d),
            ["99%", d] => m.p99 = duration(d),
            [n, "requests", "in", secs, ..] => {
                m.requests = n.parse().map_err(|_| format!("wrk: {line}"))?;
                m.elapsed = duration(secs.trim_end_matches(',')).ok_or_else(|| format!("wrk: {line}"))?;
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => m.failures += n.parse::<u64>().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                m.failures += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    if m.requests == 0 {
        return Err(format!("wrk measured nothing:\n{out}"));
    }
    Ok(m)
}

/// A gRPC unary call for h2load: the method's path and the encoded request message.
pub struct GrpcLoad {
    pub url: String,
    pub message: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

/// Runs h2load with 4 connections of 16 streams each against `load` for `seconds`.
pub fn h2load(dir: &Path, load: &GrpcLoad, seconds: u64) -> Result<Measured, String> {
    let path = dir.join("grpc-body.bin");
    // A gRPC frame: not compressed, 4-byte big-endian length, the message.
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(load.message.len()).unwrap_or(0).to_be_bytes());
    frame.extend_from_slice(&load.message);
    std::fs::write(&path, frame).map_err(|e| e.to_string())?;
    let mut args = vec![
        "-c4".to_owned(),
        "-m16".to_owned(),
        "-D".to_owned(),
        seconds.to_string(),
        "-d".to_owned(),
        path.display().to_string(),
        "-H".to_owned(),
        "content-type: application/grpc".to_owned(),
        "-H".to_owned(),
        "te: trailers".to_owned(),
    ];
    for (k, v) in &load.headers {
        args.push("-H".to_owned());
        args.push(format!("{k}: {v}"));
    }
    args.push(load.url.clone());
    let out = Command::new("h2load")
        .args(&args)
        .output()
        .map_err(|e| format!("cannot run h2load ({e}); install it: apt-get install nghttp2-client"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    parse_h2load(&text, seconds)
}

pub fn parse_h2load(out: &str, seconds: u64) -> Result<Measured, String> {
    let mut m = Measured {
        elapsed: Duration::from_secs(seconds),
        ..Measured::default()
    };
    for line in out.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["finished", "in", secs, ..] => {
                if let Some(d) = duration(secs.trim_end_matches(',')) {
                    m.elapsed = d;
                }
            }
            [
                "requests:",
                _,
                "total,",
                _,
                "started,",
                _,
                "done,",
                ok,
                "succeeded,",
                failed,
                "failed,",
                errored,
                ..,
            ] => {
                m.requests = ok.parse().unwrap_or(0);
                m.failures = failed.parse::<u64>().unwrap_or(0) + errored.parse::<u64>().unwrap_or(0);
            }
            _ => {}
        }
    }
    if m.requests == 0 {
        return Err(format!("h2load measured nothing:\n{out}"));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_read() {
        let out = "Running 10s test @ http://127.0.0.1:1/x\n  1 threads and 64 connections\n  Latency Distribution\n     50%  315.00us\n     75%  400.00us\n     90%  500.00us\n     99%    1.03ms\n  1457351 requests in 10.00s, 391.63MB read\n  Non-2xx or 3xx responses: 12\nRequests/sec: 145735.12\n";
        let m = parse_wrk(out).unwrap();
        assert_eq!(m.requests, 1_457_351);
        assert_eq!(m.failures, 12);
        assert_eq!(m.p50, Some(Duration::from_micros(315)));
        assert_eq!(m.p99, Some(Duration::from_micros(1030)));
        assert!((m.per_second() - 145_735.1).abs() < 1.0);
    }

    #[test]
    fn h2load_output_is_read() {
        let out = "finished in 10.00s, 19527.30 req/s, 1.12MB/s\nrequests: 195273 total, 195273 started, 195273 done, 195270 succeeded, 3 failed, 0 errored, 0 timeout\n";
        let m = parse_h2load(out, 10).unwrap();
        assert_eq!((m.requests, m.failures), (195_270, 3));
    }
}
