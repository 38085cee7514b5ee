//! Sockets inside a lab namespace, made from this process: a helper thread
//! enters the namespace (`setns(2)` changes only the calling thread's
//! network namespace), creates the socket and hands it back. A socket keeps
//! the namespace it was created in for its whole life, so the caller then
//! uses it from any thread.
//!
//! This is what lets the failover probe timestamp replies in-process (no
//! child process, no pipe, no parser between the packet and the clock) and
//! what lets the stability bench read `/metrics` (HTTPS) without spawning a CLI per
//! poll on a machine whose CPUs are saturated on purpose.

use std::io::{Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

/// Runs `f` on a fresh thread that has entered network namespace `ns`
/// (`/run/netns/NS`, as `ip netns add` makes it).
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
            // SAFETY: setns(2) on a valid, open namespace fd; it affects only
            // this (short-lived) thread.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!("setns({path}): {}", std::io::Error::last_os_error());
            }
            f()
        })
        .join()
        .unwrap_or_else(|_| bail!("the thread inside {ns} panicked"))
    })
}

/// A UDP socket bound to `addr` inside `ns`.
pub fn udp_socket(ns: &str, addr: SocketAddrV4) -> Result<UdpSocket> {
    in_ns(ns, || {
        UdpSocket::bind(addr).with_context(|| format!("binding UDP {addr} in {ns}"))
    })
}

/// `GET path` on `addr` inside `ns` over HTTPS (HTTP/1.1, `Connection:
/// close`), the server verified against `ca_pem` (the cluster CA); returns
/// the body of a 200 answer.
pub fn https_get(
    ns: &str,
    addr: SocketAddrV4,
    path: &str,
    ca_pem: &str,
    timeout: Duration,
) -> Result<String> {
    use rustls::pki_types::pem::PemObject as _;
    let stream = in_ns(ns, || {
        TcpStream::connect_timeout(&SocketAddr::V4(addr), timeout)
            .with_context(|| format!("connecting to {addr} in {ns}"))
    })?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.context("CA PEM")?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::IpAddress(std::net::IpAddr::V4(*addr.ip()).into());
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name)?;
    let mut tls = rustls::StreamOwned::new(conn, stream);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    tls.flush()?;
    let mut raw = Vec::new();
    match tls.read_to_end(&mut raw) {
        Ok(_) => {}
        // A server that closes without close_notify after a complete answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => {
            return Err(e).with_context(|| format!("reading the answer to GET {path} from {addr}"))
        }
    }
    parse_http_response(&raw).with_context(|| format!("GET https://{addr}{path}"))
}

/// The body of a complete HTTP/1.x response with status 200; handles
/// `Content-Length`, chunked, and read-to-close bodies.
pub fn parse_http_response(raw: &[u8]) -> Result<String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let mut lines = head.lines();
    let status = lines.next().context("empty response")?;
    let code = status.split_whitespace().nth(1).context("no status code")?;
    ensure!(code == "200", "status {status:?}");
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else if k == "content-length" {
                length = Some(
                    v.parse::<usize>()
                        .with_context(|| format!("content-length {v:?}"))?,
                );
            }
        }
    }
    let body = if chunked {
        dechunk(body)?
    } else if let Some(n) = length {
        ensure!(body.len() >= n, "body has {} of {n} bytes", body.len());
        body[..n].to_vec()
    } else {
        body.to_vec()
    };
    String::from_utf8(body).context("body is not UTF-8")
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("chunk size line without CRLF")?;
        let size_text = String::from_utf8_lossy(&body[..eol]);
        let size_hex = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .with_context(|| format!("chunk size {size_hex:?}"))?;
        body = &body[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        ensure!(body.len() >= size + 2, "truncated chunk");
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_chunked_and_close_delimited_bodies() {
        let r = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello+junk";
        assert_eq!(parse_http_response(r).unwrap(), "hello");
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_http_response(r).unwrap(), "abcde");
        let r = b"HTTP/1.0 200 OK\r\n\r\nall of it";
        assert_eq!(parse_http_response(r).unwrap(), "all of it");
    }

    #[test]
    fn refuses_errors_and_truncation() {
        assert!(parse_http_response(b"HTTP/1.1 503 Service Unavailable\r\n\r\n").is_err());
        assert!(parse_http_response(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort").is_err());
        assert!(parse_http_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}
