//! Compiles `proto/shop/**/*.proto` once for every crate: the Rust types, servers and clients
//! (tonic-prost-build), and the encoded descriptor set that reflection and the gateway's
//! transcoder read. protox parses the files in Rust, so no system `protoc` is needed.

use std::path::PathBuf;

use prost::Message as _;

/// Every contract, one per service and version.
const PROTOS: &[&str] = &[
    "shop/user/v1/user.proto",
    "shop/product/v1/product.proto",
    "shop/order/v1/order.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    println!("cargo:rerun-if-changed=shop");
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| root.join(p)).collect();
    let fds = protox::compile(&files, [&root])?;

    std::fs::write(out_dir.join("shop_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
