//! HTTPS and CORS on a listener: a gateway with a certificate made for the test (by a throwaway
//! CA, for localhost and 127.0.0.1) serves HTTP/1.1 and HTTP/2 (chosen by ALPN) to a client that
//! trusts that CA, refuses cleartext on that port, and cuts off a client that never finishes the
//! handshake; a listener with CORS answers preflights and lets only the listed origin's pages
//! read answers.

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::support::*;

/// Makes a CA and a certificate signed by it for localhost and 127.0.0.1, and writes
/// `ca.pem`, `gateway.pem` and `gateway.key` into `dir`.
fn make_certificates(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "shop test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("gateway.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("gateway.key"), key.serialize_pem()).unwrap();
}

/// The stack's file with its listener on TLS with `dir`'s certificate `cert` (and a 1 s header
/// timeout).
fn with_tls(text: &str, dir: &Path, cert: &str) -> String {
    let listener = format!(
        "address = \"127.0.0.1:0\"\ntls = {{ cert = \"{}\", key = \"{}\" }}",
        dir.join(cert).display(),
        dir.join("gateway.key").display()
    );
    let text = text.replacen("address = \"127.0.0.1:0\"", &listener, 1);
    text.replacen("[gateway]\n", "[gateway]\nheader_timeout = \"1s\"\n", 1)
}

/// What an HTTPS request got: the protocol ALPN chose, the status, the HTTP version, the body.
struct Got {
    alpn: Option<Vec<u8>>,
    status: u16,
    version: http::Version,
    body: String,
}

/// One GET over TLS, trusting only the CA in `ca`, offering `alpn`.
async fn https_get(ca: &Path, addr: std::net::SocketAddr, alpn: &[&[u8]], path: &str) -> Result<Got, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let negotiated = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let req = http::Request::get(format!("https://localhost{path}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let io = TokioIo::new(tls);
    let res = if negotiated.as_deref() == Some(b"h2") {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(req).await.map_err(|e| e.to_string())?
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(req).await.map_err(|e| e.to_string())?
    };
    let status = res.status().as_u16();
    let version = res.version();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Got {
        alpn: negotiated,
        status,
        version,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

#[test]
fn https_serves_http1_and_http2_and_refuses_cleartext_and_silent_clients() {
    let s = Stack::start("tls");
    let admin = s.admin();
    let lamp = s.product(&admin, "Lamp", 1999, 5);
    make_certificates(s.scratch.path());
    let ca = s.scratch.join("ca.pem");
    let g = start_gateway(
        &s.scratch,
        "gateway-tls",
        &with_tls(&s.config(), s.scratch.path(), "gateway.pem"),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let path = format!("/api/products/{lamp}");
    // Ready once its Consul watches have found every service (asked over HTTPS, as all below).
    let started = Instant::now();
    while rt
        .block_on(https_get(&ca, g.addr(), &[], "/health"))
        .unwrap()
        .status
        != 200
    {
        assert!(started.elapsed() < Duration::from_secs(20), "not ready");
        std::thread::sleep(Duration::from_millis(50));
    }

    let got = rt
        .block_on(https_get(&ca, g.addr(), &[b"http/1.1"], &path))
        .unwrap();
    assert_eq!((got.status, got.version), (200, http::Version::HTTP_11));
    assert_eq!(got.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert!(got.body.contains("\"name\":\"Lamp\""), "{}", got.body);

    let got = rt
        .block_on(https_get(&ca, g.addr(), &[b"h2", b"http/1.1"], &path))
        .unwrap();
    assert_eq!((got.status, got.version), (200, http::Version::HTTP_2));
    assert_eq!(got.alpn.as_deref(), Some(&b"h2"[..]));

    // Cleartext HTTP on the TLS port gets no HTTP answer.
    let plain = shop_testkit::http::request(&g.addr().to_string(), "GET", &path, &[], None);
    assert!(plain.as_ref().is_none_or(|r| r.status == 0), "{plain:?}");

    // A client that connects and never starts the handshake is let go after the header timeout.
    let started = Instant::now();
    let mut silent = TcpStream::connect(g.addr()).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = silent.read(&mut [0u8; 64]).unwrap_or(0);
    let waited = started.elapsed();
    assert_eq!(n, 0, "expected the connection closed");
    assert!(
        (Duration::from_millis(900)..Duration::from_millis(3000)).contains(&waited),
        "closed after {waited:?}"
    );
    // And the gateway still serves.
    let got = rt.block_on(https_get(&ca, g.addr(), &[b"h2"], &path)).unwrap();
    assert_eq!(got.status, 200);
}

#[test]
fn check_names_a_certificate_that_cannot_be_used() {
    let scratch = shop_testkit::Scratch::new("tls-check");
    make_certificates(scratch.path());
    let default = crate::check::default_file().replace("127.0.0.1:8080", "127.0.0.1:0");
    let check = |text: String| {
        let (ok, out) = crate::check::check(&scratch, &text);
        assert!(!ok, "{out}");
        out
    };
    // A certificate file that is not there.
    let err = check(with_tls(&default, scratch.path(), "missing.pem"));
    assert!(
        err.contains("listener 1: tls.cert:") && err.contains("missing.pem"),
        "{err}"
    );
    // The right certificate, and a key file that holds no key (the CA's certificate).
    let err = check(with_tls(&default, scratch.path(), "gateway.pem").replace("gateway.key", "ca.pem"));
    assert!(
        err.contains("listener 1: tls.key:") && err.contains("ca.pem"),
        "{err}"
    );
    // The right certificate, and a key that is not its own.
    let other = rcgen::KeyPair::generate().unwrap();
    std::fs::write(scratch.join("other.key"), other.serialize_pem()).unwrap();
    let err = check(with_tls(&default, scratch.path(), "gateway.pem").replace("gateway.key", "other.key"));
    assert!(
        err.contains("listener 1: tls.cert:") && err.contains("do not make a TLS configuration"),
        "{err}"
    );
}

#[test]
fn cors_answers_preflights_and_lets_only_listed_origins_read() {
    let s = Stack::start("cors");
    let admin = s.admin();
    let lamp = s.product(&admin, "Lamp", 1999, 5);
    let text = s.config().replacen(
        "address = \"127.0.0.1:0\"\n",
        "address = \"127.0.0.1:0\"\n\n[listener.cors]\nallow_origins = [\"https://shop.example\"]\nmax_age = \"1h\"\n",
        1,
    );
    let g = start_gateway(&s.scratch, "gateway-cors", &text);
    s.wait_ready(&g);

    // A preflight for an authenticated POST: answered by the gateway (no token needed, no limit
    // spent), with what the browser may send.
    let pre = send(
        &g,
        "OPTIONS",
        "/api/orders",
        &[
            ("Origin", "https://shop.example"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "authorization, content-type"),
        ],
        None,
    );
    assert_eq!(pre.status, 204, "{:?}", pre.raw);
    assert_eq!(
        pre.header("access-control-allow-origin"),
        Some("https://shop.example")
    );
    assert!(
        pre.header("access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );
    assert!(
        pre.header("access-control-allow-headers")
            .unwrap()
            .contains("authorization")
    );
    assert_eq!(pre.header("access-control-max-age"), Some("3600"));
    assert_eq!(pre.header("vary"), Some("origin"));

    // From another origin: refused, and nothing that would let the browser go on.
    let evil = send(
        &g,
        "OPTIONS",
        "/api/orders",
        &[
            ("Origin", "https://evil.example"),
            ("Access-Control-Request-Method", "POST"),
        ],
        None,
    );
    evil.refused(403, "PERMISSION_DENIED", "https://evil.example");
    assert_eq!(evil.header("access-control-allow-origin"), None);

    // The actual requests: the listed origin may read the answer (and the request id), another
    // is served but without the headers, so its page cannot read it.
    let path = format!("/api/products/{lamp}");
    let ok = send(&g, "GET", &path, &[("Origin", "https://shop.example")], None).expect(200);
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("https://shop.example")
    );
    assert!(
        ok.header("access-control-expose-headers")
            .unwrap()
            .contains("x-request-id")
    );
    let other = send(&g, "GET", &path, &[("Origin", "https://evil.example")], None).expect(200);
    assert_eq!(other.header("access-control-allow-origin"), None);
    let no_origin = send(&g, "GET", &path, &[], None).expect(200);
    assert_eq!(no_origin.header("access-control-allow-origin"), None);
    // Errors carry the headers too, so a page can show the message.
    let e = send(
        &g,
        "GET",
        "/api/products/abc",
        &[("Origin", "https://shop.example")],
        None,
    );
    assert_eq!(e.status, 400);
    assert_eq!(
        e.header("access-control-allow-origin"),
        Some("https://shop.example")
    );

    // The stack's own gateway has no CORS: an OPTIONS is just a method its routes do not take.
    let plain = send(
        &s.gateway,
        "OPTIONS",
        "/api/orders",
        &[
            ("Origin", "https://shop.example"),
            ("Access-Control-Request-Method", "POST"),
        ],
        None,
    );
    assert_eq!(plain.status, 405);
    assert_eq!(plain.header("access-control-allow-origin"), None);
}
