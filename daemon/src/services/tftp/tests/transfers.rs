//! Whole transfers: windowed, plain RFC 1350, netascii, edge sizes, block roll-over, hundreds at once, and real clients (tftp-hpa, atftp).

#[allow(clippy::wildcard_imports)]
use super::*;

#[tokio::test]
async fn three_mb_windowed_transfer_is_byte_identical() {
    let _g = METRICS_LOCK.lock().await;
    let srv = TestServer::start(Duration::from_secs(1), 5).await;
    let content = pattern(3 * 1024 * 1024 + 17, 1);
    srv.write("images/big.bin", &content);
    let before = snap();

    let got = fetch(
        srv.addr,
        "images/big.bin",
        &[("blksize", "1468"), ("windowsize", "4"), ("tsize", "0")],
    )
    .await
    .unwrap();
    assert!(
        got.data == content,
        "content differs ({} vs {} bytes)",
        got.data.len(),
        content.len()
    );
    let mut oack = got.oack.unwrap();
    oack.sort();
    let want: Vec<(String, String)> = [
        ("blksize", "1468"),
        ("tsize", &content.len().to_string()),
        ("windowsize", "4"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    assert_eq!(oack, want);
    assert_eq!(got.server_tid.ip(), srv.addr.ip());

    let after = wait_for("ok transfer counted", |s| s.ok == before.ok + 1).await;
    assert!(
        after.bytes - before.bytes >= content.len() as u64,
        "{before:?} -> {after:?}"
    );
    assert_eq!(after.active, before.active);
    assert_eq!(
        (after.timeout, after.error, after.denied),
        (before.timeout, before.error, before.denied)
    );
    srv.stop().await;
}

#[tokio::test]
async fn plain_rfc1350_and_netascii_and_edge_sizes() {
    let _g = METRICS_LOCK.lock().await;
    let srv = TestServer::start(Duration::from_secs(1), 5).await;
    for (name, len) in [
        ("empty", 0usize),
        ("one", 1),
        ("exact", 1024),
        ("odd", 5000),
    ] {
        let content = pattern(len, len as u64);
        srv.write(name, &content);
        // No options → no OACK, lock-step 512-byte blocks.
        let got = fetch(srv.addr, name, &[]).await.unwrap();
        assert!(got.oack.is_none());
        assert_eq!(got.data, content, "{name}");
        // Unknown options only → also no OACK.
        let got = fetch(srv.addr, name, &[("multicast", ""), ("utimeout", "5000")])
            .await
            .unwrap();
        assert!(got.oack.is_none());
        assert_eq!(got.data, content, "{name}");
    }
    // netascii is served byte-for-byte.
    srv.write("script.ipxe", b"#!ipxe\nchain http://x/y\n");
    let sock = UdpSocket::bind(LOCALHOST).await.unwrap();
    let req = Packet::Rrq(Request {
        filename: "script.ipxe".into(),
        mode: Mode::Netascii,
        options: vec![],
    });
    sock.send_to(&req.encode(), srv.addr).await.unwrap();
    let mut buf = [0u8; 600];
    let (p, _) = recv_from(&sock, &mut buf, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(
        p,
        Packet::Data {
            block: 1,
            data: b"#!ipxe\nchain http://x/y\n".to_vec()
        }
    );
    srv.stop().await;
}

#[tokio::test]
async fn block_numbers_roll_over_past_65535() {
    let _g = METRICS_LOCK.lock().await;
    let srv = TestServer::start(Duration::from_secs(1), 5).await;
    // 70_000 blocks of 8 bytes: crosses 65535 → 0.
    let content = pattern(8 * 70_000 + 5, 7);
    srv.write("roll.bin", &content);
    let got = fetch(
        srv.addr,
        "roll.bin",
        &[("blksize", "8"), ("windowsize", "16")],
    )
    .await
    .unwrap();
    assert!(
        got.data == content,
        "content differs ({} vs {} bytes)",
        got.data.len(),
        content.len()
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_concurrent_transfers() {
    const N: u64 = 300;
    let _g = METRICS_LOCK.lock().await;
    let srv = TestServer::start(Duration::from_millis(500), 5).await;
    let content = pattern(200 * 1024 + 3, 11);
    srv.write("kernel", &content);
    let before = snap();
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..N {
        let addr = srv.addr;
        clients.spawn(async move {
            let opts: &[(&str, &str)] = if i % 2 == 0 {
                &[("blksize", "1468"), ("windowsize", "4")]
            } else {
                &[("blksize", "1024")]
            };
            fetch(addr, "kernel", opts).await
        });
    }
    let mut done = 0;
    while let Some(r) = clients.join_next().await {
        let got = r
            .unwrap()
            .unwrap_or_else(|e| panic!("a concurrent fetch failed: {e:?}"));
        assert!(got.data == content, "content differs");
        done += 1;
    }
    assert_eq!(done, N);
    // A resent request whose first answer was only slow starts a second
    // transfer that the client ignores; it ends by timing out, so wait for it.
    let after = wait_for("all transfers counted and ended", |s| {
        s.ok == before.ok + N && s.active == before.active
    })
    .await;
    assert_eq!(after.ok, before.ok + N);
    srv.stop().await;
}

/// Runs an external client with a deadline; `None` if it is not installed.
async fn run_client(bin: &str, args: &[String], cwd: &Path) -> Option<std::process::Output> {
    if !Path::new(bin).exists() {
        eprintln!("{bin} not installed; skipping");
        return None;
    }
    let child = tokio::process::Command::new(bin)
        .args(args)
        .current_dir(cwd)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(45), child)
        .await
        .unwrap_or_else(|_| panic!("{bin} did not finish within 45 s"))
        .unwrap();
    Some(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_tftp_hpa_and_atftp() {
    let _g = METRICS_LOCK.lock().await;
    let srv = TestServer::start(Duration::from_secs(1), 5).await;
    let content = pattern(3 * 1024 * 1024 + 1234, 21);
    srv.write("big.bin", &content);
    let out_dir = tempfile::tempdir().unwrap();
    let port = srv.addr.port().to_string();

    // tftp-hpa's client negotiates no options: plain 512-byte lock-step.
    let dest = out_dir.path().join("hpa.bin");
    let args: Vec<String> = [
        "-m",
        "binary",
        "127.0.0.1",
        &port,
        "-c",
        "get",
        "big.bin",
        dest.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    if let Some(out) = run_client("/usr/bin/tftp", &args, out_dir.path()).await {
        let got = std::fs::read(&dest).unwrap_or_default();
        assert!(
            got == content,
            "tftp-hpa: {} bytes of {}; output {out:?}",
            got.len(),
            content.len()
        );
    }

    let dest = out_dir.path().join("atftp.bin");
    let args: Vec<String> = [
        "--option",
        "blksize 1468",
        "--option",
        "windowsize 4",
        "-g",
        "-r",
        "big.bin",
        "-l",
        dest.to_str().unwrap(),
        "127.0.0.1",
        &port,
    ]
    .map(String::from)
    .to_vec();
    if let Some(out) = run_client("/usr/bin/atftp", &args, out_dir.path()).await {
        assert!(out.status.success(), "atftp failed: {out:?}");
        let got = std::fs::read(&dest).unwrap_or_default();
        assert!(
            got == content,
            "atftp: {} bytes of {}; output {out:?}",
            got.len(),
            content.len()
        );
    }

    // A missing file is reported to the real client as an error.
    let dest = out_dir.path().join("missing.bin");
    let args: Vec<String> = [
        "-g",
        "-r",
        "missing.bin",
        "-l",
        dest.to_str().unwrap(),
        "127.0.0.1",
        &port,
    ]
    .map(String::from)
    .to_vec();
    if let Some(out) = run_client("/usr/bin/atftp", &args, out_dir.path()).await {
        assert!(
            !out.status.success(),
            "atftp fetched a missing file: {out:?}"
        );
    }
    srv.stop().await;
}
