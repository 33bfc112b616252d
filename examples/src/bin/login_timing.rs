//! Measures login latency for a right password, a wrong password and an unknown user, to show
//! that a failed login does not tell whether the account exists. Prints figures; asserts
//! nothing (see docs/benchmarks.md).
//!
//! ```text
//! just bench                                            # starts a release service, runs this
//! cargo run --release -p shop-examples --bin login-timing -- http://127.0.0.1:5001 200
//! ```

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shop_proto::user::v1 as pb;
use shop_proto::user::v1::user_service_client::UserServiceClient;
use tonic::transport::Channel;

async fn time_logins(
    client: &mut UserServiceClient<Channel>,
    username: &str,
    password: &str,
    rounds: usize,
) -> Result<Vec<Duration>, tonic::Status> {
    let mut out = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        let _ = client
            .login(pb::LoginRequest {
                username: username.to_owned(),
                password: password.to_owned(),
            })
            .await;
        out.push(started.elapsed());
    }
    out.sort();
    Ok(out)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted
        .get(i)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:5001".to_owned());
    let rounds: usize = std::env::args()
        .nth(2)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(100);
    let mut client = UserServiceClient::connect(url.clone())
        .await
        .map_err(|e| format!("cannot reach the user service at {url}: {e}"))?;

    let suffix = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() % 1_000_000;
    let username = format!("timing{suffix}");
    let password = "the-right-password";
    client
        .register(pb::RegisterRequest {
            username: username.clone(),
            email: format!("{username}@example.com"),
            password: password.to_owned(),
            full_name: String::new(),
        })
        .await?;

    // Warm up connections and caches.
    time_logins(&mut client, &username, password, 5).await?;

    println!("login latency over {rounds} sequential calls each (ms)");
    println!("{:<22} {:>8} {:>8} {:>8}", "case", "p50", "p90", "p99");
    for (case, name, pw) in [
        ("right password", username.as_str(), password),
        ("wrong password", username.as_str(), "a-wrong-password"),
        ("unknown user", "no-such-user-here", "a-wrong-password"),
    ] {
        let t = time_logins(&mut client, name, pw, rounds).await?;
        println!(
            "{case:<22} {:>8.2} {:>8.2} {:>8.2}",
            pct(&t, 0.5),
            pct(&t, 0.9),
            pct(&t, 0.99)
        );
    }
    Ok(())
}
