//! A TCP proxy in front of Kafka, for fault tests that need a broker
//! answering what a healthy one rarely does.
//!
//! It relays every request and answer unchanged but for two kinds: metadata
//! and coordinator answers name the proxy as the broker, so each of a
//! client's connections goes through it; and while brokers are hidden,
//! metadata answers list none, as a broker in controlled shutdown answers.
//! That answer is what strands librdkafka clients (confluentinc/librdkafka#5301).
//! Only the wire versions librdkafka 2.12 uses are rewritten (Metadata v9 and
//! later, FindCoordinator v0 to v2); others pass unchanged.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const METADATA: i16 = 3;
const FIND_COORDINATOR: i16 = 10;

/// A running proxy; stops accepting when dropped.
pub struct KafkaProxy {
    /// `host:port` to give clients as their bootstrap servers.
    pub address: String,
    shared: Arc<Shared>,
    acceptor: JoinHandle<()>,
}

struct Shared {
    port: u16,
    hide: AtomicBool,
    hidden_answers: AtomicU64,
}

impl KafkaProxy {
    /// Listens on a free local port and relays to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the Kafka proxy");
        let port = listener.local_addr().expect("local address").port();
        let shared = Arc::new(Shared {
            port,
            hide: AtomicBool::new(false),
            hidden_answers: AtomicU64::new(0),
        });
        let upstream = upstream.to_owned();
        let acceptor = tokio::spawn({
            let shared = Arc::clone(&shared);
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(relay(client, upstream.clone(), Arc::clone(&shared)));
                }
            }
        });
        Self {
            address: format!("127.0.0.1:{port}"),
            shared,
            acceptor,
        }
    }

    /// From now on, metadata answers list no broker (`true`), or the real ones.
    pub fn hide_brokers(&self, hide: bool) {
        self.shared.hide.store(hide, Ordering::SeqCst);
    }

    /// How many metadata answers went out without their brokers so far.
    pub fn hidden_answers(&self) -> u64 {
        self.shared.hidden_answers.load(Ordering::SeqCst)
    }
}

impl Drop for KafkaProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

/// Which request (API key, version) each outstanding correlation id is.
type Outstanding = Arc<Mutex<HashMap<i32, (i16, i16)>>>;

async fn relay(client: TcpStream, upstream: String, shared: Arc<Shared>) {
    let Ok(broker) = TcpStream::connect(&upstream).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (broker_read, broker_write) = broker.into_split();
    let outstanding = Outstanding::default();
    let requests = forward_requests(client_read, broker_write, Arc::clone(&outstanding));
    let answers = forward_answers(broker_read, client_write, outstanding, shared);
    // Either side closing ends both.
    tokio::select! {
        _ = requests => {}
        _ = answers => {}
    }
}

async fn forward_requests(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    outstanding: Outstanding,
) -> std::io::Result<()> {
    loop {
        let frame = read_frame(&mut from).await?;
        if frame.len() >= 8 {
            let key = i16::from_be_bytes([frame[0], frame[1]]);
            let version = i16::from_be_bytes([frame[2], frame[3]]);
            let correlation = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
            if key == METADATA || key == FIND_COORDINATOR {
                outstanding
                    .lock()
                    .expect("not poisoned")
                    .insert(correlation, (key, version));
            }
        }
        write_frame(&mut to, &frame).await?;
    }
}

async fn forward_answers(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    outstanding: Outstanding,
    shared: Arc<Shared>,
) -> std::io::Result<()> {
    loop {
        let mut frame = read_frame(&mut from).await?;
        if frame.len() >= 4 {
            let correlation = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
            let request = outstanding.lock().expect("not poisoned").remove(&correlation);
            match request {
                Some((METADATA, version)) if version >= 9 => {
                    let hide = shared.hide.load(Ordering::SeqCst);
                    if let Some(rewritten) = rewrite_metadata(&frame, shared.port, hide) {
                        frame = rewritten;
                        if hide {
                            shared.hidden_answers.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
                Some((FIND_COORDINATOR, version)) if version <= 2 => {
                    rewrite_coordinator(&mut frame, version, shared.port);
                }
                _ => {}
            }
        }
        write_frame(&mut to, &frame).await?;
    }
}

async fn read_frame(from: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Vec<u8>> {
    let size = from.read_i32().await?;
    let mut frame = vec![0; usize::try_from(size).unwrap_or(0)];
    from.read_exact(&mut frame).await?;
    Ok(frame)
}

async fn write_frame(to: &mut (impl AsyncWrite + Unpin), frame: &[u8]) -> std::io::Result<()> {
    let size = i32::try_from(frame.len()).expect("a Kafka frame fits an i32");
    to.write_all(&size.to_be_bytes()).await?;
    to.write_all(frame).await
}

/// A Metadata answer (v9+, flexible encoding) whose brokers all have the
/// proxy's port, or, with `hide`, whose broker list is empty. `None` if the
/// frame does not parse as one.
fn rewrite_metadata(frame: &[u8], port: u16, hide: bool) -> Option<Vec<u8>> {
    let mut frame = frame.to_vec();
    let mut at = skip_tagged_fields(&frame, 4)?; // correlation id, header tags
    at += 4; // throttle_time_ms
    let brokers_start = at;
    let (count_plus_one, mut at) = unsigned_varint(&frame, at)?;
    for _ in 1..count_plus_one {
        at += 4; // node_id
        at = skip_compact_string(&frame, at)?; // host
        frame
            .get_mut(at..at + 4)?
            .copy_from_slice(&i32::from(port).to_be_bytes());
        at += 4;
        at = skip_compact_string(&frame, at)?; // rack (nullable)
        at = skip_tagged_fields(&frame, at)?;
    }
    if hide {
        // An empty compact array is its length plus one: 1.
        frame.splice(brokers_start..at, [1]);
    }
    Some(frame)
}

/// A FindCoordinator answer (v0-v2) naming the proxy's port.
fn rewrite_coordinator(frame: &mut [u8], version: i16, port: u16) {
    let mut at = 4; // correlation id
    if version >= 1 {
        at += 4; // throttle_time_ms
    }
    at += 2; // error_code
    if version >= 1 {
        let Some(length) = frame.get(at..at + 2).map(|b| i16::from_be_bytes([b[0], b[1]])) else {
            return;
        };
        at += 2 + usize::try_from(length).unwrap_or(0); // error_message, -1 when null
    }
    at += 4; // node_id
    let Some(length) = frame.get(at..at + 2).map(|b| i16::from_be_bytes([b[0], b[1]])) else {
        return;
    };
    at += 2 + usize::try_from(length).unwrap_or(0); // host
    if let Some(field) = frame.get_mut(at..at + 4) {
        field.copy_from_slice(&i32::from(port).to_be_bytes());
    }
}

fn unsigned_varint(frame: &[u8], mut at: usize) -> Option<(usize, usize)> {
    let mut value = 0usize;
    let mut shift = 0;
    loop {
        let byte = *frame.get(at)?;
        at += 1;
        value |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some((value, at));
        }
        shift += 7;
    }
}

/// Skips a compact (nullable) string: its length plus one, 0 for null.
fn skip_compact_string(frame: &[u8], at: usize) -> Option<usize> {
    let (length_plus_one, at) = unsigned_varint(frame, at)?;
    Some(at + length_plus_one.saturating_sub(1))
}

fn skip_tagged_fields(frame: &[u8], at: usize) -> Option<usize> {
    let (count, mut at) = unsigned_varint(frame, at)?;
    for _ in 0..count {
        (_, at) = unsigned_varint(frame, at)?;
        let (size, next) = unsigned_varint(frame, at)?;
        at = next + size;
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Metadata v12 answer: correlation id 7, one broker (node 1,
    /// "127.0.0.1":9092, no rack), cluster id "c", controller 1, no topics.
    fn metadata_answer() -> Vec<u8> {
        let mut frame = vec![0, 0, 0, 7, 0]; // correlation id, no header tags
        frame.extend([0, 0, 0, 0]); // throttle_time_ms
        frame.push(2); // one broker
        frame.extend([0, 0, 0, 1]); // node_id
        frame.push(10);
        frame.extend(b"127.0.0.1");
        frame.extend(9092i32.to_be_bytes());
        frame.push(0); // rack: null
        frame.push(0); // tags
        frame.extend([2, b'c']); // cluster id
        frame.extend([0, 0, 0, 1]); // controller id
        frame.push(1); // no topics
        frame.push(0); // tags
        frame
    }

    #[test]
    fn metadata_names_the_proxy_or_hides_the_brokers() {
        let named = rewrite_metadata(&metadata_answer(), 19092, false).expect("parses");
        let mut expected = metadata_answer();
        expected[24..28].copy_from_slice(&19092i32.to_be_bytes());
        assert_eq!(named, expected);

        let hidden = rewrite_metadata(&metadata_answer(), 19092, true).expect("parses");
        assert_eq!(
            hidden,
            [&[0, 0, 0, 7, 0, 0, 0, 0, 0, 1][..], &[2, b'c', 0, 0, 0, 1, 1, 0]].concat()
        );
    }

    #[test]
    fn coordinator_answers_name_the_proxy() {
        // v1: correlation id, throttle, error 0, null message, node 1, "h", port 9092.
        let mut frame = vec![0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 1, 0, 1, b'h'];
        frame.extend(9092i32.to_be_bytes());
        rewrite_coordinator(&mut frame, 1, 19092);
        assert_eq!(frame[19..], 19092i32.to_be_bytes());
    }
}
