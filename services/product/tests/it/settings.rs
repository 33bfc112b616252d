//! Settings files may name environment variables (`${NAME}`, `${NAME:-default}`), so secrets
//! such as the Consul token stay out of the file; a missing one stops the start with the file,
//! the key and the variable named.

use shop_testkit::tokens::TokenMint;
use shop_testkit::{Launch, Scratch};

use crate::support::BIN;

const FILE: &str = "\
[server]
port = \"${PRODUCT_TEST_PORT:-0}\"
[consul]
addr = \"${PRODUCT_TEST_CONSUL:-}\"
token = \"${PRODUCT_TEST_CONSUL_TOKEN}\"
[data]
dir = \"${PRODUCT_TEST_DATA}/data\"
";

#[test]
fn a_settings_file_takes_secrets_from_the_environment() {
    let scratch = Scratch::new("settings-env-refs");
    TokenMint::create(&scratch.join("data/keys"));
    let file = scratch.join("product.toml");
    std::fs::write(&file, FILE).unwrap();
    let launch = |token: Option<&str>| {
        let launch = Launch::new(BIN, "product-service", scratch.path())
            .arg("--config")
            .arg(file.to_str().unwrap())
            .env("PRODUCT_TEST_DATA", scratch.path().to_str().unwrap());
        match token {
            Some(t) => launch.env("PRODUCT_TEST_CONSUL_TOKEN", t),
            None => launch,
        }
    };

    let (status, _, err) = launch(None).arg("--check").run(None);
    let want = format!(
        "{}: consul.token: environment variable PRODUCT_TEST_CONSUL_TOKEN is not set",
        file.display()
    );
    assert!(!status.success() && err.contains(&want), "{err}");

    let (status, out, err) = launch(Some("t0k3n-from-env")).arg("--check").run(None);
    assert!(
        status.success() && out.contains("settings are valid"),
        "{out}{err}"
    );

    // The port's default ("0", read as text) gives a free port; the data folder is expanded.
    let process = launch(Some("t0k3n-from-env")).start();
    assert_ne!(process.addr().port(), 0);
    assert!(scratch.join("data/product.db").exists());
    assert!(
        !process.logs().contains("t0k3n-from-env"),
        "the token is never logged"
    );
}
