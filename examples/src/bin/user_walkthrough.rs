//! Walks the user service's gRPC API: register, log in, read your profile, change it, and see
//! ownership and bad input refused.
//!
//! Run it against a running service (`just up` starts one):
//!
//! ```text
//! cargo run -p shop-examples --bin user-walkthrough            # http://127.0.0.1:5001
//! cargo run -p shop-examples --bin user-walkthrough -- http://10.0.0.5:5001
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use shop_proto::user::v1 as pb;
use shop_proto::user::v1::user_service_client::UserServiceClient;
use tonic::Request;

fn with_token<T>(msg: T, token: &str) -> Result<Request<T>, Box<dyn std::error::Error>> {
    let mut req = Request::new(msg);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(req)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:5001".to_owned());
    let mut users = UserServiceClient::connect(url.clone())
        .await
        .map_err(|e| format!("cannot reach the user service at {url} ({e}); is it running? try `just up`"))?;

    // A fresh name each run, so the walkthrough can be repeated.
    let suffix = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() % 1_000_000;
    let username = format!("walker{suffix}");
    let password = "a-long-enough-password";

    println!("1. Register {username}");
    let user = users
        .register(pb::RegisterRequest {
            username: username.clone(),
            email: format!("{username}@example.com"),
            password: password.to_owned(),
            full_name: "Walk Through".to_owned(),
        })
        .await?
        .into_inner();
    println!(
        "   -> id {} role {} created {}",
        user.id,
        user.role,
        user.created_at.unwrap_or_default()
    );

    println!("2. Register the same name again (in capitals)");
    let again = users
        .register(pb::RegisterRequest {
            username: username.to_uppercase(),
            email: "someone-else@example.com".to_owned(),
            password: password.to_owned(),
            full_name: String::new(),
        })
        .await;
    if let Err(status) = again {
        println!("   -> {:?}: {}", status.code(), status.message());
    }

    println!("3. Log in with the email address");
    let login = users
        .login(pb::LoginRequest {
            username: format!("{username}@example.com"),
            password: password.to_owned(),
        })
        .await?
        .into_inner();
    println!(
        "   -> {} token, expires in {}s",
        login.token_type, login.expires_in
    );
    println!("   {}", login.access_token);

    println!("4. A wrong password, and a user that does not exist: the same answer");
    for (name, pw) in [
        (username.as_str(), "wrong-password"),
        ("nobody-here", "wrong-password"),
    ] {
        let status = users
            .login(pb::LoginRequest {
                username: name.to_owned(),
                password: pw.to_owned(),
            })
            .await
            .err();
        if let Some(s) = status {
            println!("   -> {:?}: {}", s.code(), s.message());
        }
    }

    println!("5. Read and change your profile with the token");
    let me = users
        .get_user(with_token(
            pb::GetUserRequest { id: user.id },
            &login.access_token,
        )?)
        .await?
        .into_inner();
    println!("   -> {} <{}> \"{}\"", me.username, me.email, me.full_name);
    let changed = users
        .update_user(with_token(
            pb::UpdateUserRequest {
                id: user.id,
                full_name: Some("Walk Through, Esq.".to_owned()),
                ..Default::default()
            },
            &login.access_token,
        )?)
        .await?
        .into_inner();
    println!(
        "   -> now \"{}\", updated {}",
        changed.full_name,
        changed.updated_at.unwrap_or_default()
    );

    println!("6. Someone else's profile is not yours to read");
    if let Err(s) = users
        .get_user(with_token(
            pb::GetUserRequest {
                id: user.id + 100_000,
            },
            &login.access_token,
        )?)
        .await
    {
        println!("   -> {:?}: {}", s.code(), s.message());
    }

    println!("7. Without a token");
    if let Err(s) = users.get_user(pb::GetUserRequest { id: user.id }).await {
        println!("   -> {:?}: {}", s.code(), s.message());
    }
    Ok(())
}
