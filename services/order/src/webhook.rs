//! Provider reports and their signatures: `Shop-Signature: t=<unix seconds>,v1=<hex>` where the
//! hex is HMAC-SHA256 of `"<t>.<raw body>"` under the webhook secret. Checked over the exact
//! bytes sent, in constant time, and only within [`TOLERANCE_SECS`] of now, so a captured
//! report cannot be replayed later (and a replay within the window changes nothing: reports
//! are idempotent). Pure: no I/O.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::{Outcome, Refusal, Report};

/// How far a report's timestamp may be from now, either way.
pub const TOLERANCE_SECS: i64 = 300;
/// Longest provider reference accepted.
pub const PROVIDER_REF_MAX: usize = 128;
/// Longest signature header looked at.
const SIGNATURE_MAX: usize = 1024;

/// Why a report's signature is refused. The client sees one sentence for all of them (it must
/// not learn which part was wrong); the log keeps the kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("payments are not configured on this shop (no webhook secret)")]
    NoSecret,
    #[error("the Shop-Signature header is missing")]
    Missing,
    #[error("the Shop-Signature header is not t=<unix seconds>,v1=<hex>")]
    Malformed,
    #[error("the Shop-Signature timestamp is more than 5 minutes from now")]
    Stale,
    #[error("the Shop-Signature does not match the body")]
    Mismatch,
}

/// The MAC of `"<t>.<payload>"`, `t` as the text that was sent.
fn mac(secret: &str, t: &str, payload: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    m.update(t.as_bytes());
    m.update(b".");
    m.update(payload);
    m
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex digits only (either case), two per byte; no signs, no spaces.
fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Unix seconds as a provider writes them: 1 to 12 digits, no sign, no leading zero.
fn seconds(text: &str) -> Option<i64> {
    let canonical = !text.is_empty()
        && text.len() <= 12
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

/// The header value a provider sends for `payload` at unix time `t`.
pub fn sign(secret: &str, t: i64, payload: &[u8]) -> String {
    let t = t.to_string();
    format!(
        "t={t},v1={}",
        hex(&mac(secret, &t, payload).finalize().into_bytes())
    )
}

/// Checks `header` against `payload` at unix time `now`. Any `v1` entry may match (a provider
/// rotating its secret sends one per secret).
pub fn verify(secret: &str, header: &str, payload: &[u8], now: i64) -> Result<(), SignatureError> {
    if secret.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    if header.is_empty() {
        return Err(SignatureError::Missing);
    }
    if header.len() > SIGNATURE_MAX {
        return Err(SignatureError::Malformed);
    }
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) if t.is_none() => t = Some((v, seconds(v).ok_or(SignatureError::Malformed)?)),
            Some(("v1", v)) => sigs.push(unhex(v).ok_or(SignatureError::Malformed)?),
            Some(("t", _)) | None => return Err(SignatureError::Malformed),
            Some(_) => {}
        }
    }
    let (t_text, t) = t.ok_or(SignatureError::Malformed)?;
    if sigs.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if now.abs_diff(t) > TOLERANCE_SECS.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    let expected = mac(secret, t_text, payload);
    if sigs.iter().any(|s| expected.clone().verify_slice(s).is_ok()) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// A report's body: `{"provider_ref": "...", "outcome": "succeeded" | "failed"}`, and
/// optionally `"amount_cents"`, what the provider collected.
pub fn parse_report(payload: &[u8]) -> Result<(String, Report), Refusal> {
    let bad = |problem: &str| Refusal::invalid("body", problem.to_owned());
    let v: serde_json::Value = serde_json::from_slice(payload).map_err(|_| bad("is not a JSON object"))?;
    let obj = v.as_object().ok_or_else(|| bad("is not a JSON object"))?;
    let provider_ref = obj
        .get("provider_ref")
        .and_then(serde_json::Value::as_str)
        .filter(|r| !r.is_empty() && r.len() <= PROVIDER_REF_MAX)
        .ok_or_else(|| bad("provider_ref must be a string of 1 to 128 bytes"))?;
    let outcome = match obj.get("outcome").and_then(serde_json::Value::as_str) {
        Some("succeeded") => Outcome::Succeeded,
        Some("failed") => Outcome::Failed,
        _ => return Err(bad("outcome must be \"succeeded\" or \"failed\"")),
    };
    let amount_cents = match obj.get("amount_cents") {
        None => None,
        Some(a) => Some(
            a.as_i64()
                .filter(|a| *a >= 0)
                .ok_or_else(|| bad("amount_cents must be a whole number of cents"))?,
        ),
    };
    Ok((
        provider_ref.to_owned(),
        Report {
            outcome,
            amount_cents,
        },
    ))
}

/// A report's body as a provider writes it.
pub fn report_body(provider_ref: &str, outcome: Outcome, amount_cents: i64) -> Vec<u8> {
    let outcome = match outcome {
        Outcome::Succeeded => "succeeded",
        Outcome::Failed => "failed",
    };
    serde_json::json!({ "provider_ref": provider_ref, "outcome": outcome, "amount_cents": amount_cents })
        .to_string()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_signature_holds_only_for_its_bytes_its_secret_and_its_time() {
        let body = br#"{"provider_ref":"sim_1","outcome":"succeeded"}"#;
        let now = 1_800_000_000;
        let header = sign(SECRET, now, body);
        assert_eq!(verify(SECRET, &header, body, now), Ok(()));
        assert_eq!(verify(SECRET, &header, body, now + 299), Ok(()));
        assert_eq!(verify(SECRET, &header, body, now - 300), Ok(()));
        assert_eq!(
            verify(SECRET, &header, body, now + 301),
            Err(SignatureError::Stale)
        );
        let spaced = br#"{"provider_ref": "sim_1","outcome":"succeeded"}"#;
        assert_eq!(
            verify(SECRET, &header, spaced, now),
            Err(SignatureError::Mismatch)
        );
        let other = "fedcba9876543210fedcba9876543210";
        assert_eq!(verify(other, &header, body, now), Err(SignatureError::Mismatch));
        assert_eq!(verify("", &header, body, now), Err(SignatureError::NoSecret));
        // The timestamp is signed: moving it breaks the signature.
        let moved = header.replacen(&now.to_string(), &(now + 1).to_string(), 1);
        assert_eq!(verify(SECRET, &moved, body, now), Err(SignatureError::Mismatch));
        // A second v1 (a rotated secret) may be the one that matches.
        let v1 = header.split_once("v1=").map(|(_, v)| v.to_owned()).unwrap();
        let rotated = format!("t={now},v1={},v1={v1}", "00".repeat(32));
        assert_eq!(verify(SECRET, &rotated, body, now), Ok(()));
    }

    #[test]
    fn malformed_headers_are_refused() {
        let body = b"{}";
        for bad in [
            "t=1",
            "v1=00",
            "t=x,v1=00",
            "t=1,v1=0g",
            "t=1,v1=abc",
            "garbage",
            "t=1;v1=00",
        ] {
            assert!(verify(SECRET, bad, body, 1).is_err(), "{bad}");
        }
        assert_eq!(verify(SECRET, "", body, 1), Err(SignatureError::Missing));
        assert_eq!(
            verify(SECRET, &"t=1,".repeat(400), body, 1),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn reports_are_parsed_strictly() {
        let (reference, report) = parse_report(&report_body("sim_1", Outcome::Failed, 250)).unwrap();
        assert_eq!(reference, "sim_1");
        assert_eq!(
            report,
            Report {
                outcome: Outcome::Failed,
                amount_cents: Some(250)
            }
        );
        let (_, bare) = parse_report(br#"{"provider_ref":"a","outcome":"succeeded"}"#).unwrap();
        assert_eq!(bare.amount_cents, None);
        for bad in [
            &b"not json"[..],
            b"[]",
            br#"{"outcome":"succeeded"}"#,
            br#"{"provider_ref":"","outcome":"succeeded"}"#,
            br#"{"provider_ref":"a","outcome":"maybe"}"#,
            br#"{"provider_ref":7,"outcome":"failed"}"#,
            br#"{"provider_ref":"a","outcome":"failed","amount_cents":-1}"#,
            br#"{"provider_ref":"a","outcome":"failed","amount_cents":"5"}"#,
        ] {
            assert!(parse_report(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
