//! Payments, step by step: start one for a pending order (the amount is the order's total,
//! read in the transaction that records the payment; one in flight per order; an idempotency
//! key answers its first payment), hand it to the provider, and apply the provider's signed
//! report (see `webhook`) exactly once: a success pays a pending order, a failure leaves it
//! pending, a success for an order cancelled or expired meanwhile is recorded as refunded.

use shop_kit::clock::now_millis;

use crate::domain::{IdempotencyKey, Outcome, Payment, Refusal};
use crate::error::Error;
use crate::flows::{Caller, Orders};
use crate::store::payments::{self, NewPayment, Reported, Started};
use crate::webhook;

/// Simulated payments still pending after this long had their report lost (a crash); the
/// recovery pass sends it again.
pub const RESEND_AFTER_MS: i64 = 30_000;

/// The simulated provider's instruction: "succeed" (or nothing) or "fail".
fn instruction(simulate: &str) -> Result<Outcome, Refusal> {
    match simulate {
        "" | "succeed" => Ok(Outcome::Succeeded),
        "fail" => Ok(Outcome::Failed),
        other => Err(Refusal::invalid(
            "simulate",
            format!("must be \"succeed\" or \"fail\", got {other:?}"),
        )),
    }
}

impl Orders {
    /// Starts (or finds) the payment of a pending order the caller may see.
    pub async fn start_payment(
        &self,
        caller: &Caller,
        order_id: i64,
        simulate: &str,
        key: Option<IdempotencyKey>,
    ) -> Result<Payment, Error> {
        let outcome = instruction(simulate)?;
        let order = self.visible(&caller.who, order_id).await?;
        let Some(taker) = self.pay.provider.as_deref() else {
            return Err(Error::Conflict(
                "this shop takes no payments: no payment provider is configured (payments.provider)"
                    .to_owned(),
            ));
        };
        let provider = taker.name();
        let provider_ref = taker.new_ref();
        let simulate = (provider == "simulated").then_some(match outcome {
            Outcome::Succeeded => "succeed",
            Outcome::Failed => "fail",
        });
        let user_id = caller.who.user_id;
        let started = self
            .db
            .write(move |c| {
                payments::start(
                    c,
                    &NewPayment {
                        order_id,
                        user_id,
                        provider,
                        provider_ref: &provider_ref,
                        simulate,
                        key: key.as_ref().map(IdempotencyKey::as_str),
                        now: now_millis(),
                    },
                )
            })
            .await?;
        match started {
            Started::New(p) => {
                tracing::info!(
                    order_id,
                    payment_id = p.id,
                    amount_cents = p.amount_cents,
                    "payment started"
                );
                taker.begin(&p, outcome);
                Ok(p)
            }
            Started::Existing(p) => Ok(p),
            Started::KeyReused { order_id: other } => Err(Error::Conflict(format!(
                "this Idempotency-Key already started a payment for order {other}"
            ))),
            Started::NotPending(status) => Err(Error::Conflict(format!(
                "order {order_id} is {}; only a pending order can be paid",
                status.unwrap_or(order.status)
            ))),
        }
    }

    /// Applies a provider's report, after checking its signature over the exact bytes sent.
    pub async fn payment_report(&self, payload: Vec<u8>, signature: &str) -> Result<Payment, Error> {
        let now = now_millis();
        if let Err(e) = webhook::verify(&self.pay.webhook_secret, signature, &payload, now / 1000) {
            tracing::warn!(reason = %e, "payment report refused");
            return Err(Error::BadSignature(e));
        }
        let (provider_ref, report) = webhook::parse_report(&payload)?;
        let reported = {
            let provider_ref = provider_ref.clone();
            self.db
                .write(move |c| payments::report(c, &provider_ref, report, now_millis()))
                .await?
        };
        match reported {
            Reported::Unknown => Err(Error::UnknownPayment(provider_ref)),
            Reported::Payment { payment, changed } => {
                if changed {
                    self.feed.notify_waiters();
                    tracing::info!(
                        order_id = payment.order_id,
                        payment_id = payment.id,
                        status = payment.status.as_str(),
                        "payment reported"
                    );
                }
                Ok(payment)
            }
        }
    }

    /// Sends again the reports of simulated payments pending for too long (lost to a crash).
    pub async fn resend_simulated(&self, limit: i64) -> Result<usize, Error> {
        let Some(taker) = self.pay.provider.as_deref() else {
            return Ok(0);
        };
        let before = now_millis() - RESEND_AFTER_MS;
        let stale = self
            .db
            .call(move |c| payments::simulated_pending(c, before, limit))
            .await?;
        let mut resent = 0;
        for (p, simulate) in &stale {
            let outcome = instruction(simulate).unwrap_or(Outcome::Failed);
            if taker.begin(p, outcome) {
                resent += 1;
            }
        }
        Ok(resent)
    }
}
