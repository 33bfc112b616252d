//! The shop's gRPC contracts, compiled once for every crate.
//!
//! The `.proto` files beside this crate (`proto/shop/<service>/v1/`) are the single source of
//! truth. This crate exposes the generated messages, servers and clients per versioned package,
//! and [`FILE_DESCRIPTOR_SET`], the encoded descriptors that gRPC reflection serves and that the
//! gateway transcodes JSON with, so a route naming an RPC that does not exist is caught by
//! `gateway check`.

/// `shop.user.v1`: accounts, passwords and access tokens.
pub mod user {
    pub mod v1 {
        tonic::include_proto!("shop.user.v1");
    }
}

/// `shop.product.v1`: the catalogue and its inventory.
pub mod product {
    pub mod v1 {
        tonic::include_proto!("shop.product.v1");
    }
}

/// `shop.order.v1`: orders priced by the shop and backed by reserved stock.
pub mod order {
    pub mod v1 {
        tonic::include_proto!("shop.order.v1");
    }
}

/// The encoded `google.protobuf.FileDescriptorSet` of every contract above, imports included.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/shop_descriptor.bin"));

/// Fully qualified gRPC service names, as Consul-independent constants for health and routing.
pub mod names {
    pub const USER_SERVICE: &str = "shop.user.v1.UserService";
    pub const PRODUCT_SERVICE: &str = "shop.product.v1.ProductService";
    pub const ORDER_SERVICE: &str = "shop.order.v1.OrderService";
}
