//! A tiny authoritative DNS server on loopback UDP for discovery tests: answers A queries from a
//! table the test changes at run time, can be switched off to simulate an outage, and can delay
//! the answers for one name (a slow authoritative server) without delaying the others.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;

/// A running test DNS server.
pub struct TestDns {
    /// Where it listens (UDP).
    pub addr: SocketAddr,
    records: Arc<Mutex<Records>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Records {
    a: HashMap<String, Vec<Ipv4Addr>>,
    delays: HashMap<String, Duration>,
    /// Queries received (while not silent), by name.
    queried: HashMap<String, u64>,
    /// Answers sent, by name.
    answered: HashMap<String, u64>,
    ttl: u32,
    silent: bool,
}

impl TestDns {
    /// Starts a server on an ephemeral loopback port.
    pub async fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind DNS");
        let addr = socket.local_addr().expect("addr");
        let records = Arc::new(Mutex::new(Records {
            ttl: 1,
            ..Records::default()
        }));
        let task = tokio::spawn(serve(socket, records.clone()));
        Self {
            addr,
            records,
            task,
        }
    }

    /// Sets the A records of `name` (without trailing dot).
    pub fn set(&self, name: &str, ips: &[Ipv4Addr]) {
        self.records
            .lock()
            .expect("lock")
            .a
            .insert(name.to_ascii_lowercase(), ips.to_vec());
    }

    /// Stops answering (queries time out) or starts again.
    pub fn set_silent(&self, silent: bool) {
        self.records.lock().expect("lock").silent = silent;
    }

    /// Answers queries for `name` only `delay` after they arrive (with the records as they were
    /// when the query arrived); other names are answered at once. `Duration::ZERO` undoes it.
    pub fn set_delay(&self, name: &str, delay: Duration) {
        self.records
            .lock()
            .expect("lock")
            .delays
            .insert(name.to_ascii_lowercase(), delay);
    }

    /// How many queries for `name` arrived so far (while not silent).
    pub fn queried(&self, name: &str) -> u64 {
        self.records
            .lock()
            .expect("lock")
            .queried
            .get(&name.to_ascii_lowercase())
            .copied()
            .unwrap_or(0)
    }

    /// How many answers for `name` were sent so far (delayed ones count once sent).
    pub fn answered(&self, name: &str) -> u64 {
        self.records
            .lock()
            .expect("lock")
            .answered
            .get(&name.to_ascii_lowercase())
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(socket: UdpSocket, records: Arc<Mutex<Records>>) {
    let socket = Arc::new(socket);
    let mut buf = [0u8; 512];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let (name, answer, delay) = {
            let mut r = records.lock().expect("lock");
            if r.silent {
                continue;
            }
            let Some((name, answer)) = answer(&buf[..n], &r) else {
                continue;
            };
            let delay = r.delays.get(&name).copied().unwrap_or_default();
            *r.queried.entry(name.clone()).or_default() += 1;
            (name, answer, delay)
        };
        let (socket, records) = (socket.clone(), records.clone());
        // Each answer in its own task, so that a delayed name never holds up the others.
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if socket.send_to(&answer, peer).await.is_ok() {
                *records
                    .lock()
                    .expect("lock")
                    .answered
                    .entry(name)
                    .or_default() += 1;
            }
        });
    }
}

/// Builds the response to one query (with the name asked for), or `None` for packets that are
/// not queries.
fn answer(query: &[u8], records: &Records) -> Option<(String, Vec<u8>)> {
    if query.len() < 12 {
        return None;
    }
    // Question: labels, then type and class.
    let mut pos = 12;
    let mut labels = Vec::new();
    loop {
        let len = *query.get(pos)? as usize;
        pos += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(pos..pos + len)?).to_ascii_lowercase());
        pos += len;
    }
    let qtype = u16::from_be_bytes([*query.get(pos)?, *query.get(pos + 1)?]);
    let question_end = pos + 4;
    let name = labels.join(".");
    let ips: Vec<Ipv4Addr> = match (qtype, records.a.get(&name)) {
        (1, Some(ips)) => ips.clone(),
        _ => Vec::new(),
    };
    let known = records.a.contains_key(&name);
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&query[0..2]); // id
                                         // QR, AA, RD copied, RA; NXDOMAIN for unknown names.
    let rcode = if known { 0 } else { 3 };
    out.extend_from_slice(&[0x84 | (query[2] & 0x01), 0x80 | rcode]);
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(ips.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(query.get(12..question_end)?);
    for ip in ips {
        out.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
        out.extend_from_slice(&records.ttl.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&ip.octets());
    }
    Some((name, out))
}
