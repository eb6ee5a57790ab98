//! Raw HTTP over the broker socket, for requests the real client would
//! never send, and a process's memory. (The broker itself, killed and
//! restarted by the reliability tests too, is [`super::Broker`].)

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// VmRSS of `pid`, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// One raw HTTP/1.1 exchange: (status, lowercase header lines, body).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<String>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.headers
            .iter()
            .find(|h| h.starts_with(&prefix))
            .map(|h| h[prefix.len()..].trim())
    }
}

/// Send `head` (request line and headers, no blank line) and `body` on a
/// fresh connection with `Connection: close`, and read the whole answer.
pub fn http(socket: &Path, head: &str, body: &[u8]) -> std::io::Result<Answer> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let req = format!(
        "{head}\r\nHost: unbaked\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    read_answer(&mut s)
}

/// Read one answer until the server closes the connection. A reset after
/// the answer (the server closed with part of our request unread) still
/// leaves the answer.
pub fn read_answer(s: &mut UnixStream) -> std::io::Result<Answer> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) if !raw.is_empty() => break,
            Err(e) => return Err(e),
        }
    }
    parse_answer(&raw).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not an HTTP answer: {:?}", String::from_utf8_lossy(&raw)),
        )
    })
}

pub fn parse_answer(raw: &[u8]) -> Option<Answer> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    Some(Answer {
        status,
        headers: lines.map(|l| l.to_ascii_lowercase()).collect(),
        body: body.to_string(),
    })
}

/// PUT a secret through the admin API without a CLI process per write.
pub fn put_secret(socket: &Path, path: &str, key: &str, value: &[u8]) {
    use base64::Engine;
    super::register_secret(value);
    let b64 = base64::engine::general_purpose::STANDARD.encode(value);
    let body = format!("{{\"data\":{{\"{key}\":\"{b64}\"}}}}");
    let a = http(
        socket,
        &format!("PUT /v1/admin/secrets/{path} HTTP/1.1\r\nContent-Type: application/json"),
        body.as_bytes(),
    )
    .expect("the broker answers a put");
    assert_eq!(a.status, 200, "put failed: {}", a.body);
}
