//! A scripted stand-in for Consul's HTTP API, for the rules a real agent rarely shows: indexes
//! going backwards or to zero, missing headers, errors, churn. It answers each health read with
//! the next scripted reply (the last one repeats) and records what it was asked. The watch's
//! ACL visibility check (after an empty answer) gets the answers of an agent without ACLs,
//! outside the script and the record.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with an `X-Consul-Index` (if any) and a JSON body.
    Ok { index: Option<u64>, body: String },
    /// Any other status.
    Status(u16),
}

pub fn ok(index: u64, ids: &[&str]) -> Reply {
    Reply::Ok {
        index: Some(index),
        body: health_body(ids),
    }
}

/// A health answer listing instances `ids` on 127.0.0.1 with ports 7001, 7002, ...
pub fn health_body(ids: &[&str]) -> String {
    let entries: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            format!(
                r#"{{"Node":{{"Address":"127.0.0.1"}},"Service":{{"ID":"{id}","Service":"svc","Tags":null,"Address":"","Port":{},"Meta":null}},"Checks":[]}}"#,
                7001 + i
            )
        })
        .collect();
    format!("[{}]", entries.join(","))
}

#[derive(Clone)]
pub struct Stub {
    pub addr: String,
    script: Arc<Mutex<VecDeque<Reply>>>,
    /// Request line and headers of every request, in order.
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl Stub {
    pub async fn start(script: Vec<Reply>) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stub = Stub {
            addr: format!("http://{}", listener.local_addr().unwrap()),
            script: Arc::new(Mutex::new(script.into())),
            requests: Arc::default(),
        };
        let s = stub.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let mut chunk = [0u8; 4096];
                        let n = match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = find(&buf, b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                            buf.drain(..end + 4);
                            if let Some(wire) = visibility_answer(&head) {
                                if conn.write_all(wire.as_bytes()).await.is_err() {
                                    return;
                                }
                                continue;
                            }
                            s.requests.lock().unwrap().push(head);
                            let reply = {
                                let mut script = s.script.lock().unwrap();
                                if script.len() > 1 {
                                    script.pop_front()
                                } else {
                                    script.front().cloned()
                                }
                            };
                            let wire = match reply {
                                Some(Reply::Ok { index, body }) => format!(
                                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{}Content-Length: {}\r\n\r\n{body}",
                                    index
                                        .map(|i| format!("X-Consul-Index: {i}\r\n"))
                                        .unwrap_or_default(),
                                    body.len()
                                ),
                                Some(Reply::Status(code)) => {
                                    format!("HTTP/1.1 {code} Oops\r\nContent-Length: 4\r\n\r\noops")
                                }
                                None => return,
                            };
                            if conn.write_all(wire.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        stub
    }

    /// Replaces what is left of the script.
    pub fn then(&self, script: Vec<Reply>) {
        *self.script.lock().unwrap() = script.into();
    }

    pub fn seen(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived (or panics after 10 s).
    pub async fn wait_for(&self, n: usize) {
        let started = std::time::Instant::now();
        while self.requests.lock().unwrap().len() < n {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "only {} requests arrived",
                self.seen().len()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// What an agent without ACLs answers to the visibility check's reads: the service is not on
/// this agent (404), and the catalog has one node. `None` for every other request.
fn visibility_answer(head: &str) -> Option<String> {
    let path = head.lines().next()?.split_whitespace().nth(1)?;
    if path.starts_with("/v1/agent/health/service/name/") {
        Some("HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found".to_owned())
    } else if path.starts_with("/v1/catalog/nodes") {
        let body = r#"[{"Node":"stub","Address":"127.0.0.1"}]"#;
        Some(format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    } else {
        None
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
