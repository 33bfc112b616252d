//! Starting the service and talking to it.

use shop_auth::{TokenRules, Verifier};
use shop_proto::user::v1 as pb;
use shop_proto::user::v1::user_service_client::UserServiceClient;
use shop_testkit::{Launch, Process, Scratch};
use tonic::Status;
use tonic::transport::Channel;

pub use shop_testkit::grpc::{assert_status, with_token};

pub const ADMIN: &str = "root";
pub const ADMIN_PASSWORD: &str = "root-password-1";

/// One user service with its own data folder.
pub struct Harness {
    pub scratch: Scratch,
    pub launch: Launch,
    pub process: Process,
}

impl Harness {
    /// Starts a service with an admin account seeded from the environment.
    pub fn start(name: &str) -> Harness {
        let scratch = Scratch::new(name);
        let launch = Launch::new(env!("CARGO_BIN_EXE_user-service"), "user-service", scratch.path())
            .arg("--port")
            .arg("0")
            .arg("--data-dir")
            .arg(scratch.join("data").to_str().unwrap())
            .arg("--consul")
            .arg("")
            .arg("--log")
            .arg("info,user_service=debug")
            .env("SHOP_ADMIN_USER", ADMIN)
            .env("SHOP_ADMIN_PASSWORD", ADMIN_PASSWORD);
        let process = launch.start();
        Harness {
            scratch,
            launch,
            process,
        }
    }

    pub async fn client(&self) -> UserServiceClient<Channel> {
        UserServiceClient::connect(self.process.url()).await.unwrap()
    }

    /// Starts the service again on the same data folder (after a stop or a kill).
    pub fn restart(&mut self) {
        self.process = self.launch.start();
    }

    pub fn public_key_path(&self) -> std::path::PathBuf {
        self.scratch.join("data/keys/token-signing.pub.pem")
    }

    pub fn private_key_pem(&self) -> Vec<u8> {
        std::fs::read(self.scratch.join("data/keys/token-signing.pem")).unwrap()
    }

    pub fn verifier(&self) -> Verifier {
        Verifier::from_file(
            shop_auth::ALGORITHM,
            &self.public_key_path(),
            &TokenRules::default(),
        )
        .unwrap()
    }
}

pub fn password_of(username: &str) -> String {
    format!("pw-{username}-secret")
}

pub async fn register(client: &mut UserServiceClient<Channel>, username: &str) -> pb::User {
    client
        .register(pb::RegisterRequest {
            username: username.to_owned(),
            email: format!("{username}@example.com"),
            password: password_of(username),
            full_name: format!("{username} Example"),
        })
        .await
        .unwrap_or_else(|s| panic!("register {username}: {s:?}"))
        .into_inner()
}

pub async fn login_as(
    client: &mut UserServiceClient<Channel>,
    login: &str,
    password: &str,
) -> Result<pb::LoginResponse, Status> {
    client
        .login(pb::LoginRequest {
            username: login.to_owned(),
            password: password.to_owned(),
        })
        .await
        .map(|r| r.into_inner())
}

/// Logs in with the password [`register`] used and returns the token.
pub async fn token_of(client: &mut UserServiceClient<Channel>, username: &str) -> String {
    login_as(client, username, &password_of(username))
        .await
        .unwrap()
        .access_token
}

pub async fn admin_token(client: &mut UserServiceClient<Channel>) -> String {
    login_as(client, ADMIN, ADMIN_PASSWORD)
        .await
        .unwrap()
        .access_token
}
