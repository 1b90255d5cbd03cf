//! Hostile clients at the gateway: slow ones, garbage requests, inputs the
//! services must refuse. None may get a 5xx, be left hanging, or slow the
//! gateway down for everyone else. (Oversized, non-UTF-8 and nested bodies,
//! 415s and unknown routes: gateway.rs.)

use std::time::Duration;

use serde_json::{json, Value};
use test_kit::{new_warrior, Stack};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

const PROBLEM_JSON: &str = "application/problem+json";

/// `host:port` of the gateway.
fn gateway_addr(stack: &Stack) -> String {
    let rest = stack.gateway.split("://").nth(1).unwrap_or(&stack.gateway);
    rest.trim_end_matches('/').to_owned()
}

/// Sends raw bytes and reads the answer until the gateway closes the
/// connection (every request here says `Connection: close` or is cut off).
async fn raw(stack: &Stack, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(gateway_addr(stack))
        .await
        .expect("gateway reachable");
    stream.write_all(request).await.expect("request sent");
    let mut answer = Vec::new();
    timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the gateway answered and closed within 10 s")
        .expect("answer read");
    String::from_utf8_lossy(&answer).into_owned()
}

fn status_of(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
}

fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    answer
        .split("\r\n\r\n")
        .next()?
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(key, _)| key.trim().eq_ignore_ascii_case(name))
        .map(|(_, value)| value.trim())
}

#[tokio::test]
async fn garbage_requests_get_4xx_problems() {
    let stack = Stack::from_env();
    let long_path = format!(
        "GET /{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "a".repeat(10_000)
    );
    let big_header = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(9_000)
    );
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("not HTTP", b"GARBAGE\r\n\r\n".to_vec(), 400),
        ("a TLS hello", [&b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"[..], &[0; 40]].concat(), 400),
        ("no Host", b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec(), 400),
        ("a path above the root", b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), 400),
        ("a raw NUL in the path", b"GET /warrior/\0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), 400),
        ("an encoded NUL in the path", b"GET /warrior/%00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), 400),
        ("bad percent-encoding", b"GET /warrior/%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), 400),
        ("an absolute URI", b"GET http://elsewhere/warrior HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), 400),
        ("CONNECT", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n".to_vec(), 400),
        ("OPTIONS *", b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), 400),
        (
            "Content-Length and chunked (smuggling)",
            b"POST /warrior HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n".to_vec(),
            400,
        ),
        (
            "a broken chunk",
            b"POST /warrior HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n".to_vec(),
            400,
        ),
        (
            "a negative Content-Length",
            b"POST /warrior HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: -1\r\nConnection: close\r\n\r\n".to_vec(),
            400,
        ),
        ("a header over 8 KiB", big_header.into_bytes(), 400),
        ("a 10 KB path", long_path.into_bytes(), 414),
        ("an unknown method", b"FOO /warrior HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), 405),
        ("TRACE", b"TRACE /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), 405),
        ("a double slash", b"GET //warrior HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), 404),
        ("an encoded slash in an id", b"GET /warrior/a%2Fb HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), 404),
        ("an undecodable id", b"GET /warrior/%FF%FE HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), 404),
        ("an undecodable history id", b"GET /warrior/%FF/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), 404),
    ];
    for (what, request, expected) in cases {
        let answer = raw(&stack, &request).await;
        assert_eq!(status_of(&answer), expected, "{what}: {answer}");
        assert_eq!(header(&answer, "content-type"), Some(PROBLEM_JSON), "{what}: {answer}");
    }
}

#[tokio::test]
async fn routes_nginx_answers_itself_take_get_only() {
    let stack = Stack::from_env();
    for path in ["/health", "/openapi.json"] {
        for method in ["POST", "PUT", "DELETE", "PATCH"] {
            let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
            let response = stack
                .http
                .request(method.clone(), stack.at(path))
                .send()
                .await
                .expect("reachable");
            assert_eq!(response.status(), 405, "{method} {path}");
            assert_eq!(response.headers()["allow"], "GET, HEAD", "{method} {path}");
            assert_eq!(response.headers()["content-type"], PROBLEM_JSON, "{method} {path}");
        }
    }
}

/// `/warrior` and `/warrior/{id}` are split between the two services; a 405
/// must list the methods of both.
#[tokio::test]
async fn a_405_on_a_split_path_lists_both_sides_methods() {
    let stack = Stack::from_env();
    let id = uuid::Uuid::new_v4();
    let cases = [
        ("PATCH", "/warrior".to_owned(), "GET, HEAD, POST"),
        ("PUT", "/warrior".to_owned(), "GET, HEAD, POST"),
        ("PATCH", format!("/warrior/{id}"), "GET, HEAD, PUT, DELETE"),
        ("POST", format!("/warrior/{id}"), "GET, HEAD, PUT, DELETE"),
    ];
    for (method, path, allow) in cases {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let response = stack
            .http
            .request(method.clone(), stack.at(&path))
            .send()
            .await
            .expect("reachable");
        assert_eq!(response.status(), 405, "{method} {path}");
        let allows: Vec<_> = response.headers().get_all("allow").iter().collect();
        assert_eq!(allows, vec![allow], "{method} {path}");
        assert_eq!(
            response.headers().get_all("x-request-id").iter().count(),
            1,
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn openapi_document_is_served_as_committed() {
    let stack = Stack::from_env();
    let response = stack.get("/openapi.json").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let served: Value = response.json().await.expect("JSON");
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json"))
        .expect("docs/openapi.json");
    let committed: Value = serde_json::from_str(&committed).expect("committed JSON");
    assert_eq!(served, committed);
    assert!(served["paths"]["/warrior"]["post"].is_object());
}

#[tokio::test]
async fn nul_and_undecodable_input_is_a_4xx_or_nothing_found() {
    let stack = Stack::from_env();
    // PostgreSQL cannot store NUL: a name or skill holding one is invalid.
    for body in [
        json!({"name": "a\u{0}b", "dob": "2000-01-01"}),
        json!({"name": "A", "dob": "2000-01-01", "fight_skills": ["\u{0}"]}),
    ] {
        let response = stack.post_json("/warrior", &body).await;
        assert_eq!(response.status(), 422, "{body}");
        assert_eq!(response.headers()["content-type"], PROBLEM_JSON);
    }
    // ...so no warrior matches a term holding one.
    for path in [
        "/warrior?t=a%00b",
        "/api/v1/queries/warriors?t=%00",
        "/warrior?t=%FF%FE",
    ] {
        let response = stack.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        let found: Vec<Value> = response.json().await.expect("JSON");
        assert!(found.is_empty(), "{path}");
    }
    for path in ["/warrior?t=a&t=b", "/api/v1/queries/warriors?t=a&t=b"] {
        let response = stack.get(path).await;
        assert_eq!(response.status(), 400, "{path}");
        assert_eq!(response.headers()["content-type"], PROBLEM_JSON, "{path}");
    }
}

#[tokio::test]
async fn nesting_deeper_than_the_parser_allows_within_64_kib_is_a_400() {
    let stack = Stack::from_env();
    let created = stack.create(&new_warrior()).await;
    let id = created["id"].as_str().expect("id");
    // 30,000 levels in 60 KB: under the size limit, far over serde_json's 128.
    let nested = format!("{{\"name\":{}{}}}", "[".repeat(30_000), "]".repeat(30_000));
    for (method, path) in [("POST", "/warrior".to_owned()), ("PUT", format!("/warrior/{id}"))] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let response = stack
            .http
            .request(method.clone(), stack.at(&path))
            .header("content-type", "application/json")
            .body(nested.clone())
            .send()
            .await
            .expect("reachable");
        assert_eq!(response.status(), 400, "{method} {path}");
        assert_eq!(response.headers()["content-type"], PROBLEM_JSON);
    }
}

/// Opens a connection and sends `partial`, never the rest.
async fn stalled(stack: &Stack, partial: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(gateway_addr(stack))
        .await
        .expect("gateway reachable");
    stream.write_all(partial).await.expect("partial request sent");
    stream
}

const PARTIAL_HEADERS: &[u8] = b"GET /counting-warriors HTTP/1.1\r\nHost: x\r\n";
const PARTIAL_BODY: &[u8] =
    b"POST /warrior HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"na";

/// The gateway gives up on a stalled client (10 s without a byte) instead of
/// holding its connection forever.
async fn assert_cut_off(stack: &Stack, partial: &[u8]) {
    let mut stream = stalled(stack, partial).await;
    let started = Instant::now();
    let mut buffer = Vec::new();
    let read = timeout(Duration::from_secs(20), stream.read_to_end(&mut buffer)).await;
    assert!(read.is_ok(), "still connected after 20 s");
    let answer = String::from_utf8_lossy(&buffer);
    // Closed (or reset) without an answer, or with a 408: never a 5xx.
    assert!(
        answer.is_empty() || status_of(&answer) == 408,
        "unexpected answer to a stalled request: {answer}"
    );
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_client_stalling_in_its_headers_is_cut_off() {
    assert_cut_off(&Stack::from_env(), PARTIAL_HEADERS).await;
}

#[tokio::test]
async fn a_client_stalling_in_its_body_is_cut_off() {
    assert_cut_off(&Stack::from_env(), PARTIAL_BODY).await;
}

/// 300 stalled connections (headers and bodies) do not slow anyone else:
/// nginx buffers whole bodies before proxying, so no service request slot
/// or worker waits on a slow client.
#[tokio::test]
async fn stalled_clients_do_not_starve_the_others() {
    let stack = Stack::from_env();
    let mut stalled_connections = Vec::new();
    for i in 0..300 {
        let partial = if i % 2 == 0 { PARTIAL_HEADERS } else { PARTIAL_BODY };
        stalled_connections.push(stalled(&stack, partial).await);
    }
    for _ in 0..10 {
        let started = Instant::now();
        let created = stack.create(&new_warrior()).await;
        let id = created["id"].as_str().expect("id");
        assert_eq!(stack.get(&format!("/warrior/{id}")).await.status(), 200);
        assert_eq!(stack.get("/counting-warriors").await.status(), 200);
        assert_eq!(stack.get("/health").await.status(), 200);
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_secs(2),
            "four requests took {elapsed:?} beside stalled clients"
        );
    }
    drop(stalled_connections);
}
