//! The listener's own protections against clients that send nothing, send slowly or hold on:
//! a connection that sends nothing or sends its headers too slowly is cut off at the header
//! timeout (counted from accept), a stalled body gets 408 and the connection closes, idle
//! keep-alive connections (HTTP/1.1 and HTTP/2) close at the idle timeout, a request head past
//! the size limit is refused, and at the connection cap idle connections make room, so a flood
//! of silent sockets cannot keep a real client out.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::{Stack, start_gateway};

fn with_gateway_keys(s: &Stack, keys: &str) -> String {
    let text = s.config();
    let anchor = "\ntrusted_proxies = []\n";
    assert!(text.contains(anchor));
    text.replace(anchor, &format!("{anchor}{keys}\n"))
}

/// Reads until the peer closes or `limit` passes; returns what came and whether it closed.
fn read_until_closed(c: &mut TcpStream, limit: Duration) -> (String, bool) {
    c.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0; 4096];
    while started.elapsed() < limit {
        match c.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), true),
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), false)
}

#[test]
fn slow_headers_are_cut_off_and_huge_heads_refused() {
    let s = Stack::start("gw-listener");
    let text = with_gateway_keys(&s, "header_timeout = \"1s\"\nmax_header_bytes = 8192");
    let g = start_gateway(&s.scratch, "gateway-strict-listener", &text);
    let addr = g.addr();

    // One byte every 300 ms: the headers never finish within 1 s.
    let mut slow = TcpStream::connect(addr).unwrap();
    let started = Instant::now();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").unwrap();
    let mut closed = false;
    for b in b"X-Slow: abcdefghijklmnop".iter() {
        std::thread::sleep(Duration::from_millis(300));
        if slow.write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
        let (_, c) = read_until_closed(&mut slow, Duration::from_millis(1));
        if c {
            closed = true;
            break;
        }
    }
    assert!(closed, "a slow client was not cut off");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "cut off after {:?}",
        started.elapsed()
    );

    // A 20 KB header: refused with 431, never reaches a route.
    let mut big = TcpStream::connect(addr).unwrap();
    let head = format!(
        "GET /api/products/1 HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(20_000)
    );
    let _ = big.write_all(head.as_bytes());
    let (answer, _) = read_until_closed(&mut big, Duration::from_secs(3));
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
}

#[test]
fn a_connection_that_sends_nothing_is_closed_at_the_header_timeout() {
    let s = Stack::start("gw-silent");
    let text = with_gateway_keys(&s, "header_timeout = \"1s\"");
    let g = start_gateway(&s.scratch, "gateway-silent", &text);
    let mut silent = TcpStream::connect(g.addr()).unwrap();
    let started = Instant::now();
    let (answer, closed) = read_until_closed(&mut silent, Duration::from_secs(5));
    let after = started.elapsed();
    eprintln!("silent connection closed after {after:?}");
    assert!(closed && answer.is_empty(), "{answer:?}");
    assert!(
        (Duration::from_millis(900)..Duration::from_millis(2_500)).contains(&after),
        "closed after {after:?}, header_timeout 1s"
    );
}

#[test]
fn a_stalled_body_gets_408_and_the_connection_closes() {
    let s = Stack::start("gw-stalled-body");
    let text = with_gateway_keys(&s, "body_timeout = \"1s\"");
    let g = start_gateway(&s.scratch, "gateway-stalled-body", &text);
    let admin = s.admin();
    let mut c = TcpStream::connect(g.addr()).unwrap();
    let started = Instant::now();
    let head = format!(
        "POST /api/products HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\n\
         Content-Type: application/json\r\nContent-Length: 40\r\n\r\n{{"
    );
    c.write_all(head.as_bytes()).unwrap();
    let (answer, closed) = read_until_closed(&mut c, Duration::from_secs(5));
    let after = started.elapsed();
    eprintln!("stalled body answered after {after:?}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains("\"code\":\"DEADLINE_EXCEEDED\""), "{answer:?}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer:?}"
    );
    assert!(closed, "the connection closes after the 408");
    assert!(after < Duration::from_millis(2_500), "answered after {after:?}");
    let listed = crate::support::call(&g, "GET", "/api/products?page_size=100", None, None).expect(200);
    assert_eq!(listed.json["total"], 0, "nothing was created");
}

#[test]
fn idle_keep_alive_connections_close_at_the_idle_timeout() {
    let s = Stack::start("gw-idle");
    let text = with_gateway_keys(&s, "idle_timeout = \"1s\"");
    let g = start_gateway(&s.scratch, "gateway-idle", &text);
    s.wait_ready(&g);
    let mut c = TcpStream::connect(g.addr()).unwrap();
    c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let started = Instant::now();
    let (answer, closed) = read_until_closed(&mut c, Duration::from_secs(5));
    let after = started.elapsed();
    eprintln!("idle HTTP/1.1 connection closed {after:?} after its request");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(closed, "kept alive past the idle timeout");
    assert!(
        (Duration::from_millis(900)..Duration::from_millis(2_500)).contains(&after),
        "closed after {after:?}, idle_timeout 1s"
    );
    // HTTP/2 (prior knowledge): one request, then a GOAWAY and the end of the connection.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let after = rt.block_on(async {
        let stream = tokio::net::TcpStream::connect(g.addr()).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        let conn = tokio::spawn(conn);
        let req = http::Request::get(format!("http://{}/health", g.addr()))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let res = send.send_request(req).await.unwrap();
        assert_eq!(res.status(), 200);
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), conn)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        started.elapsed()
    });
    eprintln!("idle HTTP/2 connection closed {after:?} after its request");
    assert!(after < Duration::from_millis(2_500), "{after:?}");
    let m = crate::support::call(&g, "GET", "/metrics", None, None).expect(200);
    assert!(
        m.raw
            .body
            .contains("gateway_connections_closed_total{reason=\"idle\"} 2"),
        "{}",
        m.raw.body
    );
}

#[test]
fn silent_connections_past_the_cap_cannot_keep_a_client_out() {
    let s = Stack::start("gw-max-conns");
    let text = with_gateway_keys(&s, "max_connections = 50");
    let g = start_gateway(&s.scratch, "gateway-fifty-conns", &text);
    let addr = g.addr();
    // Four times the cap in silent sockets, from one client.
    let silent: Vec<TcpStream> = (0..200).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (answer, _) = read_until_closed(&mut c, Duration::from_secs(5));
    let after = started.elapsed();
    eprintln!("a client behind 200 silent sockets (cap 50) was served in {after:?}");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(after < Duration::from_secs(1), "served after {after:?}");
    let m = crate::support::call(&g, "GET", "/metrics", None, None).expect(200);
    let open = m
        .raw
        .body
        .lines()
        .find_map(|l| l.strip_prefix("gateway_connections_open "))
        .unwrap();
    assert!(open.parse::<usize>().unwrap() <= 50, "open {open}");
    drop(silent);
}

#[test]
fn at_the_cap_with_every_connection_busy_a_new_one_waits_for_a_slot() {
    let s = Stack::start("gw-busy-cap");
    let text = with_gateway_keys(&s, "max_connections = 2\nbody_timeout = \"2s\"");
    let g = start_gateway(&s.scratch, "gateway-two-busy", &text);
    let addr = g.addr();
    // Two requests whose bodies never finish keep both connections busy (not idle).
    let busy: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(b"POST /api/users/login HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n{")
                .unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut third = TcpStream::connect(addr).unwrap();
    third
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (answer, _) = read_until_closed(&mut third, Duration::from_millis(700));
    assert!(
        answer.is_empty(),
        "served past the cap while both were busy: {answer:?}"
    );
    // Their bodies time out (408), their slots free, the waiting connection is served.
    let (answer, closed) = read_until_closed(&mut third, Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(closed);
    drop(busy);
}
