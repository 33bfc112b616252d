//! The user service's memory under a login burst: argon2 needs ~19 MiB per hash, and a burst of
//! hundreds of logins (some given up by their callers mid-hash) must not grow the process by
//! more than the pool's fixed arenas. Read from `/proc/<pid>/status`.

use std::time::Duration;

use shop_proto::user::v1 as pb;
use tonic::Code;

use crate::support::*;

/// A `/proc/<pid>/status` field, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_logins_leaves_memory_flat() {
    let h = Harness::start("login-memory");
    let mut c = h.client().await;
    register(&mut c, "alice").await;
    for _ in 0..4 {
        token_of(&mut c, "alice").await;
    }
    let pid = h.process.pid();
    let before = status_kib(pid, "VmRSS:");

    let mut calls = Vec::new();
    for i in 0..300 {
        let mut c = c.clone();
        calls.push(tokio::spawn(async move {
            let mut req = tonic::Request::new(pb::LoginRequest {
                username: "alice".to_owned(),
                password: if i % 3 == 0 {
                    "wrong-password".to_owned()
                } else {
                    password_of("alice")
                },
            });
            // A third of the callers give up early, while their hash may be running.
            if i % 3 == 1 {
                req.set_timeout(Duration::from_millis(5));
            }
            c.login(req).await.map(|_| ())
        }));
    }
    let (mut ok, mut refused, mut gave_up) = (0, 0, 0);
    for call in calls {
        match call.await.unwrap() {
            Ok(()) => ok += 1,
            Err(s) if s.code() == Code::Unauthenticated => refused += 1,
            Err(_) => gave_up += 1,
        }
    }
    // Let hashes whose callers gave up finish.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = status_kib(pid, "VmRSS:");
    let peak = status_kib(pid, "VmHWM:");
    eprintln!(
        "300 parallel logins ({ok} ok, {refused} wrong password, {gave_up} given up): \
         RSS {} MiB before, {} MiB after, peak {} MiB",
        before / 1024,
        after / 1024,
        peak / 1024
    );
    assert!(ok >= 100 && refused == 100, "{ok} ok, {refused} refused");
    assert!(
        after < before + 64 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    assert!(peak < before + 96 * 1024, "peak RSS {peak} KiB from {before} KiB");
}
