//! gRPC reflection as a client other than tonic's sees it: grpcio's (Python) lists what each of
//! the three services advertises, over v1alpha and v1, and describes its methods
//! (`services/lib/kit/scripts/reflect.py`). Each service must offer exactly its own service, health
//! and reflection, and know nothing of the other two.

use std::path::{Path, PathBuf};
use std::process::Command;

use shop_proto::names::{ORDER_SERVICE, PRODUCT_SERVICE, USER_SERVICE};

use crate::support::Stack;

const INSTALL_HINT: &str = "run `services/lib/kit/scripts/get-grpcio` (`just test` does) and point \
     SHOP_GRPC_PYTHON at the python it prints";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A Python with grpcio and grpcio-reflection: `SHOP_GRPC_PYTHON`, else the one get-grpcio
/// installs in `.tools/grpc-venv`. Missing, the test fails with the hint; it is never skipped.
fn grpc_python() -> PathBuf {
    if let Some(path) = std::env::var_os("SHOP_GRPC_PYTHON").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.exists(),
            "SHOP_GRPC_PYTHON={} does not exist; {INSTALL_HINT}",
            path.display()
        );
        return path;
    }
    let local = repo_root().join(".tools/grpc-venv/bin/python");
    assert!(
        local.exists(),
        "this test needs Python with grpcio (not in SHOP_GRPC_PYTHON, not at {}); {INSTALL_HINT}",
        local.display()
    );
    local
}

/// Runs reflect.py against `addr` for `own`, the others named absent; returns what it printed.
fn reflect(python: &Path, addr: std::net::SocketAddr, own: &str, absent: &[&str]) -> String {
    let mut command = Command::new(python);
    command
        .arg(repo_root().join("services/lib/kit/scripts/reflect.py"))
        .arg(addr.to_string())
        .arg(own);
    for name in absent {
        command.arg("--absent").arg(name);
    }
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {INSTALL_HINT}", python.display()));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    match out.status.code() {
        Some(0) => stdout.into_owned(),
        Some(2) => panic!("{}: {}", python.display(), stderr.trim()),
        _ => panic!("reflection of {own} at {addr} is wrong:\n{stderr}\n{stdout}"),
    }
}

#[test]
fn each_service_advertises_exactly_what_it_serves_over_v1alpha_and_v1() {
    let python = grpc_python();
    let stack = Stack::start("reflection");
    let services = [
        (
            &stack.user,
            USER_SERVICE,
            &["Register", "Login", "ListRevocations"][..],
        ),
        (
            &stack.product,
            PRODUCT_SERVICE,
            &["GetProduct", "ReserveStock", "CommitReservation"][..],
        ),
        (
            &stack.order,
            ORDER_SERVICE,
            &["CreateOrder", "StartPayment", "ListEvents"][..],
        ),
    ];
    let all = [USER_SERVICE, PRODUCT_SERVICE, ORDER_SERVICE];
    for (process, own, methods) in services {
        let others: Vec<&str> = all.into_iter().filter(|s| *s != own).collect();
        let printed = reflect(&python, process.addr(), own, &others);
        for version in ["v1alpha", "v1"] {
            let listed = format!(
                "{version}: lists grpc.health.v1.Health, grpc.reflection.v1.ServerReflection, \
                 grpc.reflection.v1alpha.ServerReflection, {own}"
            );
            assert!(printed.contains(&listed), "{own}: want {listed:?} in:\n{printed}");
        }
        for method in methods {
            let described = format!("  rpc {method}(.{}", own.rsplit_once('.').unwrap().0);
            assert!(
                printed.matches(&described).count() == 2,
                "{own}: {method} described over both versions:\n{printed}"
            );
        }
        assert!(printed.contains("grpcio-reflection client: lists"), "{printed}");
    }
}
