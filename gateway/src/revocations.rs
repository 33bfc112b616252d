//! The gateway's side of token revocation: it follows the user service's `ListRevocations`
//! feed (through the upstream `[auth] revocations` names, balanced like any call) once a
//! second, so a token of a deleted account, or of one whose role changed, is refused on every
//! route within about two seconds, while a request's way never calls the user service.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use http::uri::PathAndQuery;
use shop_auth::revoked::{self, Batch};
use shop_proto::user::v1 as pb;

use crate::grpc;
use crate::live::Gateway;

/// The deadline of one read of the feed.
const FETCH_TIMEOUT: Duration = Duration::from_secs(2);

/// Follows the feed for as long as the gateway runs, from whichever upstream the configuration
/// in use names (a reload may change it).
pub async fn follow(gateway: Arc<Gateway>) {
    let revocations = gateway.revocations();
    revoked::follow(&revocations, revoked::POLL_EVERY, |after| {
        let gateway = Arc::clone(&gateway);
        async move { fetch(&gateway, after).await }
    })
    .await;
}

async fn fetch(gateway: &Gateway, after: i64) -> Result<Batch, String> {
    let loaded = gateway.current();
    let Some(name) = &loaded.config().auth.revocations else {
        // Not configured: nothing to learn (the file says so; `gateway check` accepts it).
        return Ok(Batch {
            cursor: after,
            ..Batch::default()
        });
    };
    let upstream = loaded
        .upstream(name)
        .ok_or_else(|| format!("[auth] revocations names no upstream {name:?}"))?;
    let picked = upstream
        .balancer
        .pick(None)
        .map_err(|e| format!("upstream {name}: {e}"))?;
    let request = prost::Message::encode_to_vec(&pb::ListRevocationsRequest { after });
    let reply = grpc::unary(
        picked.conn(),
        &PathAndQuery::from_static("/shop.user.v1.UserService/ListRevocations"),
        &HeaderMap::new(),
        grpc::frame(&request),
        FETCH_TIMEOUT,
    )
    .await
    .map_err(|e| format!("upstream {name}: {e}"))?;
    let answer = <pb::ListRevocationsResponse as prost::Message>::decode(reply)
        .map_err(|e| format!("upstream {name}: cannot decode the revocations: {e}"))?;
    Ok(answer.into())
}
