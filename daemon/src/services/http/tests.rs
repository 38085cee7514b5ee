//! The HTTP boot server over real TCP on 127.0.0.1: artifacts from a real
//! directory ([`DirLookup`] hashing real files; the `ETag`s are checked
//! against `sha256sum`), scripts from a state applied through the real
//! `State::apply`, and a raw HTTP/1.1 client, so every byte the server
//! writes is seen.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::files::{parse_range, safe_name, Ranged};
use super::{serve_listener, DirLookup, Limits};
use crate::consensus::{ClusterHandle, ProposeError};
use crate::metrics::{self, CodeLabel};
use crate::model::{
    BootProfile, Command, CommandResponse, Mac, Reservation, ServiceConfig, State, Subnet,
};

/// The replicated state, read-only: the HTTP server only reads.
#[derive(Clone)]
struct Applied(Arc<State>);

impl ClusterHandle for Applied {
    async fn propose(&self, _cmd: Command) -> Result<CommandResponse, ProposeError> {
        Err(ProposeError::Failed(
            "the HTTP server never proposes".into(),
        ))
    }

    fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.0)
    }
}

const RESERVED: Mac = Mac([0x52, 0x54, 0x00, 0xab, 0xcd, 0x01]);

fn config() -> ServiceConfig {
    let profile = |name: &str, kernel: Option<&str>| BootProfile {
        name: name.into(),
        kernel: kernel.map(Into::into),
        initrd: Some("initrd.img".into()),
        cmdline: Some("console=ttyS0 quiet".into()),
        ..BootProfile::default()
    };
    ServiceConfig {
        subnets: vec![Subnet {
            cidr: "127.0.0.0/8".parse().unwrap(),
            pools: vec![],
            router: None,
            dns: vec![],
            domain: None,
            lease_time: 600,
            next_server: None,
            profile: Some("lan".into()),
        }],
        reservations: vec![Reservation {
            mac: RESERVED,
            ip: Ipv4Addr::new(127, 0, 0, 9),
            hostname: None,
            profile: Some("rescue".into()),
        }],
        profiles: vec![
            profile("lan", Some("vmlinuz")),
            BootProfile {
                initrd: Some("http://mirror.example/rescue.img".into()),
                cmdline: None,
                ..profile("rescue", Some("vmlinuz-rescue"))
            },
            profile("nokernel", None),
        ],
        ..ServiceConfig::default()
    }
}

struct Fixture {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Fixture {
    async fn start(limits: Limits) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.path().join("big.bin"), &big).unwrap();
        std::fs::write(dir.path().join("boot.ipxe"), "#!ipxe\nchain other.ipxe\n").unwrap();
        std::fs::write(dir.path().join("empty"), "").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/x"), "x").unwrap();
        let outside = dir.path().parent().unwrap().join("tandem-http-outside");
        std::fs::write(&outside, "secret").unwrap();
        let _ = std::os::unix::fs::symlink(&outside, dir.path().join("escape"));

        let mut state = State::default();
        state.apply(&Command::SetConfig { config: config() });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(serve_listener(
            listener,
            limits,
            Applied(Arc::new(state)),
            Arc::new(DirLookup::new(dir.path())),
            cancel.clone(),
        ));
        Fixture {
            addr,
            dir,
            cancel,
            task,
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.addr.port())
    }
}

/// One answer as it came off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn parse_answer(raw: &[u8]) -> Answer {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    Answer {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}

/// Sends `method path` with `extra` header lines and `Connection: close`,
/// reads until the server closes.
async fn request(addr: SocketAddr, method: &str, path: &str, extra: &[&str]) -> Answer {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
    for h in extra {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("the server answers and closes")
        .unwrap();
    parse_answer(&raw)
}

fn sha256sum(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

fn count_of(code: &str) -> u64 {
    metrics::get()
        .http_requests
        .get_or_create(&CodeLabel { code: code.into() })
        .get()
}

#[tokio::test]
#[allow(clippy::many_single_char_names)] // f: the fixture; a, h, n, b, e: answers
async fn get_and_head_carry_length_and_etag_and_if_none_match_is_304() {
    let f = Fixture::start(Limits::default()).await;
    let want = std::fs::read(f.dir.path().join("big.bin")).unwrap();
    let etag = format!("\"{}\"", sha256sum(&f.dir.path().join("big.bin")));
    let ok_before = count_of("200");

    let a = request(f.addr, "GET", "/big.bin", &[]).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-length"), Some("3000000"));
    assert_eq!(a.header("etag"), Some(etag.as_str()));
    assert_eq!(a.header("accept-ranges"), Some("bytes"));
    assert!(a.body == want, "body differs from the file");

    let h = request(f.addr, "HEAD", "/big.bin", &[]).await;
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-length"), Some("3000000"));
    assert_eq!(h.header("etag"), Some(etag.as_str()));
    assert!(h.body.is_empty());

    let inm = format!("If-None-Match: \"nope\", {etag}");
    let n = request(f.addr, "GET", "/big.bin", &[&inm]).await;
    assert_eq!(n.status, 304);
    assert_eq!(n.header("etag"), Some(etag.as_str()));
    assert!(n.body.is_empty());
    let stale = request(f.addr, "GET", "/big.bin", &["If-None-Match: \"old\""]).await;
    assert_eq!(stale.status, 200);

    // An artifact named boot.ipxe is served as it is; so are empty files
    // and names with a directory.
    let b = request(f.addr, "GET", "/boot.ipxe", &[]).await;
    assert_eq!(
        (b.status, b.body.as_slice()),
        (200, &b"#!ipxe\nchain other.ipxe\n"[..])
    );
    let e = request(f.addr, "GET", "/empty", &[]).await;
    assert_eq!((e.status, e.header("content-length")), (200, Some("0")));
    assert_eq!(request(f.addr, "GET", "/sub/x", &[]).await.body, b"x");

    // Every answer was counted (other tests count too: at least ours).
    assert!(count_of("200") >= ok_before + 6);
    assert!(count_of("304") >= 1);
    f.cancel.cancel();
}

#[tokio::test]
async fn single_ranges_are_206_and_unsatisfiable_is_416() {
    let f = Fixture::start(Limits::default()).await;
    let want = std::fs::read(f.dir.path().join("big.bin")).unwrap();
    for (range, start, end) in [
        ("bytes=0-0", 0, 0),
        ("bytes=100-199", 100, 199),
        ("bytes=2999990-", 2_999_990, 2_999_999),
        ("bytes=-10", 2_999_990, 2_999_999),
        ("bytes=2999000-9999999", 2_999_000, 2_999_999),
        ("bytes=-5000000", 0, 2_999_999),
    ] {
        let a = request(f.addr, "GET", "/big.bin", &[&format!("Range: {range}")]).await;
        assert_eq!(a.status, 206, "{range}");
        assert_eq!(
            a.header("content-range"),
            Some(format!("bytes {start}-{end}/3000000").as_str()),
            "{range}"
        );
        assert_eq!(
            a.header("content-length"),
            Some((end - start + 1).to_string().as_str())
        );
        assert!(a.body == want[start..=end], "{range}: wrong bytes");
    }
    for range in ["bytes=3000000-", "bytes=-0", "bytes=5000000-5000001"] {
        let a = request(f.addr, "GET", "/big.bin", &[&format!("Range: {range}")]).await;
        assert_eq!(a.status, 416, "{range}");
        assert_eq!(a.header("content-range"), Some("bytes */3000000"));
    }
    // Several ranges, other units, nonsense, and a stale If-Range: all of it.
    for extra in [
        &["Range: bytes=0-1,5-6"][..],
        &["Range: items=0-1"],
        &["Range: bytes=9-3"],
        &["Range: bytes=x-"],
        &["Range: bytes=0-1", "If-Range: \"other\""],
    ] {
        let a = request(f.addr, "GET", "/big.bin", extra).await;
        assert_eq!(a.status, 200, "{extra:?}");
        assert_eq!(a.body.len(), want.len());
    }
    // A matching If-Range keeps the range.
    let etag = format!("\"{}\"", sha256sum(&f.dir.path().join("big.bin")));
    let a = request(
        f.addr,
        "GET",
        "/big.bin",
        &["Range: bytes=1-2", &format!("If-Range: {etag}")],
    )
    .await;
    assert_eq!((a.status, a.body.as_slice()), (206, &want[1..=2]));
    f.cancel.cancel();
}

#[test]
fn range_and_name_parsing() {
    assert_eq!(parse_range("bytes=0-", 0), Ranged::Unsatisfiable);
    assert_eq!(parse_range("bytes=-1", 0), Ranged::Unsatisfiable);
    assert_eq!(parse_range("BYTES = 1-2", 10), Ranged::Bytes(1, 2));
    assert_eq!(parse_range("bytes=+1-2", 10), Ranged::Ignore);
    assert_eq!(parse_range("bytes=1", 10), Ranged::Ignore);
    assert_eq!(
        parse_range("bytes=18446744073709551616-", 10),
        Ranged::Ignore
    );
    for ok in ["a", "vmlinuz-6.1", "sub/x", "boot.ipxe", "a..b"] {
        assert!(safe_name(ok), "{ok}");
    }
    for bad in [
        "",
        "..",
        "../etc/passwd",
        "a/../b",
        "a//b",
        "/abs",
        "a\\b",
        "a\nb",
        "a/",
    ] {
        assert!(!safe_name(bad), "{bad:?}");
    }
}

#[tokio::test]
async fn refusals_unknown_escapes_methods_and_bodies() {
    let f = Fixture::start(Limits::default()).await;
    let nf_before = count_of("404");
    for path in [
        "/nope",
        "/",
        "/../big.bin",
        "/sub/../big.bin",
        "/%2e%2e/big.bin",
        "/escape",
        "/sub",
        "/boot/zz.ipxe",
        "/boot/profile/nope.ipxe",
        "/boot/profile/lan.txt",
    ] {
        let a = request(f.addr, "GET", path, &[]).await;
        assert_eq!(a.status, 404, "{path}");
        assert!(!String::from_utf8_lossy(&a.body).contains("secret"));
    }
    assert!(count_of("404") >= nf_before + 10);
    for m in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let a = request(f.addr, m, "/big.bin", &[]).await;
        assert_eq!(a.status, 405, "{m}");
        assert_eq!(a.header("allow"), Some("GET, HEAD"));
    }
    let a = request(f.addr, "GET", "/big.bin", &["Content-Length: 5"]).await;
    assert_eq!(a.status, 413);
    let a = request(f.addr, "GET", "/big.bin", &["Transfer-Encoding: chunked"]).await;
    assert_eq!(a.status, 413);
    // Too many header lines: hyper refuses the head.
    let many: Vec<String> = (0..100).map(|i| format!("X-{i}: y")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let a = request(f.addr, "GET", "/big.bin", &many).await;
    assert_eq!(a.status, 431);
    f.cancel.cancel();
}

#[tokio::test]
async fn scripts_by_profile_and_by_mac() {
    let f = Fixture::start(Limits::default()).await;
    let base = f.base();
    let a = request(f.addr, "GET", "/boot/profile/lan.ipxe", &[]).await;
    assert_eq!(a.status, 200);
    assert_eq!(
        String::from_utf8(a.body).unwrap(),
        format!(
            "#!ipxe\n# tandem boot profile lan\n\
             # A failed fetch is retried: the first time at once, then once a second,\n\
             # 8 failures at most.\n\
             set tries:int32 0\n\
             :kernel\n\
             kernel {base}/vmlinuz initrd=initrd console=ttyS0 quiet && goto kernel_ok ||\n\
             inc tries\n\
             iseq ${{tries}} 8 && goto failed ||\n\
             iseq ${{tries}} 1 || sleep 1\n\
             goto kernel\n\
             :kernel_ok\n\
             :initrd\n\
             initrd --name initrd {base}/initrd.img && goto initrd_ok ||\n\
             inc tries\n\
             iseq ${{tries}} 8 && goto failed ||\n\
             iseq ${{tries}} 1 || sleep 1\n\
             goto initrd\n\
             :initrd_ok\n\
             boot\n\
             :failed\n\
             echo tandem: 8 fetches failed, giving up\n\
             exit 1\n"
        )
    );
    assert_eq!(super::script::MAX_FETCH_FAILURES, 8);
    // The reservation's profile, by iPXE's ${mac}; a URL stays a URL.
    let a = request(f.addr, "GET", &format!("/boot/{RESERVED}.ipxe"), &[]).await;
    assert_eq!(a.status, 200);
    let text = String::from_utf8(a.body).unwrap();
    for line in [
        "# tandem boot profile rescue for 52:54:00:ab:cd:01\n".to_owned(),
        format!("\nkernel {base}/vmlinuz-rescue initrd=initrd && goto kernel_ok ||\n"),
        "\ninitrd --name initrd http://mirror.example/rescue.img && goto initrd_ok ||\n".to_owned(),
    ] {
        assert!(text.contains(&line), "{line:?} missing from:\n{text}");
    }
    // Another MAC: the profile of the subnet the client is in (127/8 here).
    let a = request(f.addr, "GET", "/boot/52:54:00:00:00:02.ipxe", &[]).await;
    assert_eq!(a.status, 200);
    assert!(String::from_utf8(a.body)
        .unwrap()
        .contains("# tandem boot profile lan for 52:54:00:00:00:02\n"));
    // A profile without a kernel has no script.
    let a = request(f.addr, "GET", "/boot/profile/nokernel.ipxe", &[]).await;
    assert_eq!(a.status, 404);
    f.cancel.cancel();
}

#[tokio::test]
async fn connection_caps_and_timeouts() {
    let limits = Limits {
        max_connections: 4,
        max_per_client: 2,
        header_timeout: Duration::from_millis(400),
        idle_timeout: Duration::from_millis(700),
    };
    let f = Fixture::start(limits).await;
    let busy_before = count_of("503");
    // Two idle connections fill this client's share; the third is refused.
    // (hyper's header timer runs from when it starts reading the head: connect.)
    let t = Instant::now();
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(TcpStream::connect(f.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let a = request(f.addr, "GET", "/big.bin", &[]).await;
    assert_eq!(a.status, 503);
    assert!(count_of("503") > busy_before);
    // Slowloris: a header that never ends is cut at the header timeout.
    let mut buf = Vec::new();
    held[0]
        .write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), held[0].read_to_end(&mut buf))
        .await
        .expect("closed at the header timeout");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_millis(1500),
        "closed after {took:?}"
    );
    // The other one sent nothing: closed by the header timeout or the idle watchdog.
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), held[1].read_to_end(&mut buf))
        .await
        .expect("an idle connection is closed");
    drop(held);
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The slots are free again.
    assert_eq!(request(f.addr, "GET", "/sub/x", &[]).await.status, 200);
    // A reader that stops reading is closed by the idle watchdog.
    // (A small receive window, so the file cannot all sit in socket buffers.)
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut s = sock.connect(f.addr).await.unwrap();
    s.write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 1024];
    let _ = s.read(&mut first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(
        rest.len() + 1024 < 3_000_000,
        "a stalled reader got the whole file ({} bytes)",
        rest.len()
    );
    f.cancel.cancel();
}

#[tokio::test]
async fn cancel_drops_transfers_at_once() {
    let f = Fixture::start(Limits::default()).await;
    let mut s = TcpStream::connect(f.addr).await.unwrap();
    s.write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 512];
    let _ = s.read(&mut first).await.unwrap();
    let t = Instant::now();
    f.cancel.cancel();
    tokio::time::timeout(Duration::from_millis(500), f.task)
        .await
        .expect("the server stops at once with a transfer open")
        .unwrap();
    assert!(t.elapsed() < Duration::from_millis(500));
    // The listener is gone too.
    assert!(TcpStream::connect(f.addr).await.is_err());
}

/// User + system CPU seconds of process `pid` so far (/proc/PID/stat).
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command: utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// 50 × 32 MiB over loopback with curl (4 in parallel), once from this server and once
/// from nginx (sendfile on, one worker) serving the same file; prints MiB/s and
/// the server's CPU seconds. Heavy: run it under the shared lock,
/// `flock /tmp/heavy.lock cargo test --release -p tandem --lib http::tests::throughput -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; needs nginx-light and curl, and the heavy lock"]
async fn throughput_against_nginx() {
    const N: usize = 50;
    const SIZE: u64 = 32 << 20;
    let f = Fixture::start(Limits::default()).await;
    let mut data = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(std::fs::File::open("/dev/urandom").unwrap(), SIZE),
        &mut data,
    )
    .unwrap();
    std::fs::write(f.dir.path().join("k.bin"), &data).unwrap();
    let curl = |port: u16| {
        let mut args = vec![
            "-s".to_owned(),
            "-f".to_owned(),
            "--parallel".into(),
            "--parallel-max".into(),
            "4".into(),
        ];
        for _ in 0..N {
            args.extend([
                "-o".into(),
                "/dev/null".into(),
                format!("http://127.0.0.1:{port}/k.bin"),
            ]);
        }
        let t = Instant::now();
        let st = std::process::Command::new("curl")
            .args(&args)
            .status()
            .unwrap();
        assert!(st.success(), "curl failed");
        t.elapsed().as_secs_f64()
    };
    let mib = f64::from(u32::try_from(N).unwrap() * u32::try_from(SIZE >> 20).unwrap());
    // Warm the ETag cache and the page cache first, for both servers alike.
    assert_eq!(request(f.addr, "HEAD", "/k.bin", &[]).await.status, 200);
    let me = std::process::id().to_string();
    let port = f.addr.port();
    let (wall, cpu) = tokio::task::spawn_blocking(move || {
        let c0 = cpu_secs(&me);
        let wall = curl(port);
        (wall, cpu_secs(&me) - c0)
    })
    .await
    .unwrap();
    println!(
        "=== tandem HTTP: {N} x 32 MiB in {wall:.2} s = {:.0} MiB/s, server CPU {cpu:.2} s",
        mib / wall
    );

    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nport = l.local_addr().unwrap().port();
    drop(l);
    let conf = f.dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off; master_process off; worker_processes 1; error_log stderr;\n\
             pid {d}/nginx.pid; events {{}}\n\
             http {{ access_log off; sendfile on; tcp_nopush on; \
             client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; \
             uwsgi_temp_path {d}; scgi_temp_path {d};\n\
             server {{ listen 127.0.0.1:{nport}; root {d}; }} }}\n",
            d = f.dir.path().display()
        ),
    )
    .unwrap();
    let mut nginx = std::process::Command::new("nginx")
        .args([
            "-c",
            conf.to_str().unwrap(),
            "-p",
            f.dir.path().to_str().unwrap(),
        ])
        .spawn()
        .expect("nginx (nginx-light)");
    let pid = nginx.id().to_string();
    let up = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        std::net::TcpStream::connect(("127.0.0.1", nport)).is_ok()
    });
    assert!(up, "nginx did not start");
    let c0 = cpu_secs(&pid);
    let nwall = curl(nport);
    let ncpu = cpu_secs(&pid) - c0;
    let _ = nginx.kill();
    let _ = nginx.wait();
    println!(
        "=== nginx:       {N} x 32 MiB in {nwall:.2} s = {:.0} MiB/s, server CPU {ncpu:.2} s",
        mib / nwall
    );
    f.cancel.cancel();
}
