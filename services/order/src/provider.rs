//! Payment providers behind one trait, and the built-in simulated one. A provider takes a
//! payment the shop has recorded and later reports its outcome to the shop's webhook, signed
//! with the shared secret; the shop never trusts anything but that signed report.
//!
//! The simulated provider reports about a second after a payment starts, through the gateway
//! like a real provider would (`payments.webhook_url`), signed with the webhook secret, and
//! retries with backoff while the shop does not answer. Reports lost to a crash are sent again
//! by the recovery pass (`simulated_pending`): reports are idempotent, so a repeat is harmless.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand_core::{OsRng, RngCore};

use crate::domain::{Outcome, Payment};
use crate::webhook;

/// A payment provider.
pub trait Provider: Send + Sync {
    /// The name payments record (`provider`).
    fn name(&self) -> &'static str;
    /// A fresh, unguessable reference for a payment about to be recorded.
    fn new_ref(&self) -> String;
    /// Asks the provider to collect `payment`; the outcome arrives later at the webhook.
    /// `outcome` is the simulated provider's instruction; real providers ignore it. False when
    /// nothing new was started (the payment is already under way).
    fn begin(&self, payment: &Payment, outcome: Outcome) -> bool;
}

/// Delay before the simulated provider reports.
const REPORT_AFTER: Duration = Duration::from_secs(1);
/// Attempts per report, with doubling pauses from one second.
const ATTEMPTS: u32 = 6;
/// Deadline of one delivery.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The built-in provider: always collects, reports after [`REPORT_AFTER`].
pub struct Simulated {
    secret: String,
    url: hyper::Uri,
    client: Client<HttpConnector, Full<Bytes>>,
    /// Payments whose report is being sent, or was refused by the shop for good: a resend of
    /// those is dropped, so a shop that cannot be reached never piles up senders and a refused
    /// report is not sent again until a restart.
    sending: Mutex<HashSet<i64>>,
}

impl Simulated {
    pub fn new(secret: String, url: hyper::Uri) -> Arc<Simulated> {
        Arc::new(Simulated {
            secret,
            url,
            client: Client::builder(TokioExecutor::new()).build_http(),
            sending: Mutex::new(HashSet::new()),
        })
    }

    /// Sends one signed report; `Ok(true)` when the shop took it (2xx), `Ok(false)` when it
    /// refused it for good (4xx other than 408 and 429: retrying cannot help).
    async fn deliver(&self, body: &[u8]) -> Result<bool, String> {
        let now = shop_kit::clock::now_millis() / 1000;
        let req = Request::builder()
            .method(Method::POST)
            .uri(self.url.clone())
            .header("content-type", "application/json")
            .header("shop-signature", webhook::sign(&self.secret, now, body))
            .body(Full::new(Bytes::copy_from_slice(body)))
            .map_err(|e| e.to_string())?;
        let answer = tokio::time::timeout(DELIVERY_TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| format!("no answer within {DELIVERY_TIMEOUT:?}"))?
            .map_err(|e| e.to_string())?;
        let status = answer.status();
        if status.is_success() {
            return Ok(true);
        }
        if status.is_client_error() && status.as_u16() != 408 && status.as_u16() != 429 {
            return Ok(false);
        }
        Err(format!("HTTP {status}"))
    }

    /// Sends a report, retrying; true when the shop refused it for good (4xx).
    async fn report(
        &self,
        payment_id: i64,
        provider_ref: String,
        amount_cents: i64,
        outcome: Outcome,
    ) -> bool {
        let body = webhook::report_body(&provider_ref, outcome, amount_cents);
        let mut pause = Duration::from_secs(1);
        for attempt in 1..=ATTEMPTS {
            match self.deliver(&body).await {
                Ok(true) => {
                    tracing::info!(payment_id, provider_ref, "simulated provider reported");
                    return false;
                }
                Ok(false) => {
                    tracing::warn!(
                        payment_id,
                        provider_ref,
                        "the shop refused the simulated report for good; not sent again \
                         (check payments.webhook_url and the secret)"
                    );
                    return true;
                }
                Err(e) if attempt < ATTEMPTS => {
                    tracing::info!(payment_id, attempt, error = %e, "report not delivered; retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(e) => {
                    tracing::warn!(payment_id, error = %e, "report not delivered; recovery sends it again")
                }
            }
        }
        false
    }
}

impl Provider for Arc<Simulated> {
    fn name(&self) -> &'static str {
        "simulated"
    }

    fn new_ref(&self) -> String {
        let mut bytes = [0u8; 16];
        OsRng.fill_bytes(&mut bytes);
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!("sim_{hex}")
    }

    fn begin(&self, payment: &Payment, outcome: Outcome) -> bool {
        let id = payment.id;
        if !self
            .sending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id)
        {
            return false;
        }
        let me = Arc::clone(self);
        let (provider_ref, amount_cents) = (payment.provider_ref.clone(), payment.amount_cents);
        tokio::spawn(async move {
            tokio::time::sleep(REPORT_AFTER).await;
            // A report the shop refused stays marked, so it is not sent again; the others may
            // be (one taken is never asked for again: its payment is no longer pending).
            if !me.report(id, provider_ref, amount_cents, outcome).await {
                me.sending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
            }
        });
        true
    }
}
