//! The listener's own protections: a client that sends its headers too slowly is cut off, a
//! request head past the size limit is refused, and connections past the cap wait until a slot
//! frees.

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
fn connections_past_the_cap_wait_for_a_free_slot() {
    let s = Stack::start("gw-max-conns");
    let text = with_gateway_keys(&s, "max_connections = 2");
    let g = start_gateway(&s.scratch, "gateway-two-conns", &text);
    let addr = g.addr();
    // Two idle keep-alive connections take both slots.
    let first = TcpStream::connect(addr).unwrap();
    let second = TcpStream::connect(addr).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut third = TcpStream::connect(addr).unwrap();
    third
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (answer, _) = read_until_closed(&mut third, Duration::from_millis(700));
    assert!(answer.is_empty(), "served past the cap: {answer:?}");
    // A slot frees: the waiting connection is served.
    drop(first);
    let (answer, closed) = read_until_closed(&mut third, Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(closed);
    drop(second);
}
