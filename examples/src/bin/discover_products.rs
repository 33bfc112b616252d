//! Finds the product service through Consul and calls it directly over gRPC, the way the order
//! service and the gateway do: a blocking-query watch for healthy instances, a balancer over
//! them, a deadline on every call.
//!
//! ```text
//! just up        # Consul and the services
//! cargo run -p shop-examples --bin discover-products                       # Consul on :8500
//! cargo run -p shop-examples --bin discover-products -- http://10.0.0.2:8500
//! ```

use std::time::Duration;

use shop_discovery::watch::{self, WatchConfig};
use shop_discovery::{Balancer, ConsulClient, Policy};
use shop_proto::product::v1 as pb;
use shop_proto::product::v1::product_service_client::ProductServiceClient;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let consul = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:8500".to_owned());
    let client = ConsulClient::new(&consul, std::env::var("SHOP_CONSUL_TOKEN").ok())?;
    let mut instances = watch::consul(client, WatchConfig::new("product-service"));

    // The first answer arrives within milliseconds when Consul is up.
    let first = tokio::time::timeout(Duration::from_secs(5), instances.changed()).await;
    let set = instances.borrow_and_update().clone();
    if first.is_err() || !set.fresh {
        return Err(format!("no answer from Consul at {consul}; is it running? try `just up`").into());
    }
    println!("product-service in Consul (epoch {}):", set.epoch);
    for e in &set.endpoints {
        println!("  {} at {} {:?}", e.id, e.authority(), e.meta);
    }

    let balancer = Balancer::new("product-service", Policy::PowerOfTwo, instances);
    for q in ["手机", "coffee"] {
        let page = balancer
            .call(Duration::from_secs(2), |channel, left| async move {
                let mut req = tonic::Request::new(pb::ListProductsRequest {
                    q: q.to_owned(),
                    page_size: Some(3),
                    ..Default::default()
                });
                req.set_timeout(left); // travels as grpc-timeout
                ProductServiceClient::new(channel).list_products(req).await
            })
            .await?
            .into_inner();
        println!("q={q:?}: {} matches", page.total);
        for p in page.products {
            println!("  #{} {}", p.id, p.name);
        }
    }
    for i in balancer.instances() {
        println!(
            "instance {} ({}) has {} calls in flight",
            i.id,
            i.authority,
            i.in_flight()
        );
    }
    Ok(())
}
