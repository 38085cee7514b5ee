//! Requests the server refuses: paths out of the root, write requests, missing files and malformed requests.

#[allow(clippy::wildcard_imports)]
use super::*;

#[tokio::test]
async fn traversal_and_symlinks_out_are_denied() {
    let _g = METRICS_LOCK.lock().await;
    let srv = TestServer::start(Duration::from_secs(1), 5).await;
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"secret").unwrap();
    srv.write("ok.bin", b"fine");
    std::os::unix::fs::symlink(outside.path().join("secret"), srv.root.join("link-out")).unwrap();
    std::os::unix::fs::symlink(outside.path(), srv.root.join("dir-out")).unwrap();
    std::os::unix::fs::symlink("ok.bin", srv.root.join("link-in")).unwrap();
    let before = snap();

    let attempts = [
        "../../etc/passwd".to_owned(),
        "../ok.bin".to_owned(),
        "/../../etc/passwd".to_owned(),
        "/etc/passwd".to_owned(),
        format!("{}/secret", outside.path().display()),
        "link-out".to_owned(),
        "dir-out/secret".to_owned(),
    ];
    for a in &attempts {
        expect_error(fetch(srv.addr, a, &[]).await, ErrorCode::AccessViolation, a);
    }
    // Inside the root, via a symlink or an absolute path: served.
    assert_eq!(fetch(srv.addr, "link-in", &[]).await.unwrap().data, b"fine");
    assert_eq!(fetch(srv.addr, "/ok.bin", &[]).await.unwrap().data, b"fine");
    let abs = format!("{}/ok.bin", srv.root.display());
    assert_eq!(
        fetch(srv.addr, &abs, &[("tsize", "0")]).await.unwrap().data,
        b"fine"
    );

    let n = attempts.len() as u64;
    let after = wait_for("denials counted", |s| {
        s.denied == before.denied + n && s.ok == before.ok + 3
    })
    .await;
    assert_eq!(after.denied_escape, before.denied_escape + n);
    assert_eq!(after.active, before.active);
    srv.stop().await;
}

#[tokio::test]
async fn wrq_missing_files_and_bad_requests_get_errors() {
    let _g = METRICS_LOCK.lock().await;
    let srv = TestServer::start(Duration::from_secs(1), 5).await;
    srv.write("sub/x", b"x");
    let before = snap();

    // WRQ: refused, counted as denied (but not as an escape).
    let sock = UdpSocket::bind(LOCALHOST).await.unwrap();
    let wrq = Packet::Wrq(Request {
        filename: "new.bin".into(),
        mode: Mode::Octet,
        options: vec![],
    });
    sock.send_to(&wrq.encode(), srv.addr).await.unwrap();
    let mut buf = [0u8; 600];
    let (p, _) = recv_from(&sock, &mut buf, Duration::from_secs(2))
        .await
        .expect("no reply to WRQ");
    assert!(
        matches!(
            p,
            Packet::Error {
                code: ErrorCode::AccessViolation,
                ..
            }
        ),
        "{p:?}"
    );
    assert!(!srv.root.join("new.bin").exists());

    expect_error(
        fetch(srv.addr, "nope.bin", &[]).await,
        ErrorCode::FileNotFound,
        "missing",
    );
    expect_error(
        fetch(srv.addr, "sub", &[]).await,
        ErrorCode::FileNotFound,
        "directory",
    );

    // Junk and broken requests: the server answers requests, drops the rest, and keeps serving.
    for junk in [
        &b""[..],
        b"\x00",
        b"\x00\x09junk",
        b"\x00\x04\x00\x01",
        b"\x00\x01unterminated",
    ] {
        sock.send_to(junk, srv.addr).await.unwrap();
    }
    let (p, _) = recv_from(&sock, &mut buf, Duration::from_secs(2))
        .await
        .expect("no reply to broken RRQ");
    assert!(
        matches!(
            p,
            Packet::Error {
                code: ErrorCode::NotDefined,
                ..
            }
        ),
        "{p:?}"
    );
    let mut bad_mode = b"\x00\x01sub/x\x00binary\x00".to_vec();
    sock.send_to(&bad_mode, srv.addr).await.unwrap();
    let (p, _) = recv_from(&sock, &mut buf, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(
        matches!(
            p,
            Packet::Error {
                code: ErrorCode::IllegalOperation,
                ..
            }
        ),
        "{p:?}"
    );
    bad_mode = b"\x00\x01sub/x\x00MAIL\x00".to_vec();
    sock.send_to(&bad_mode, srv.addr).await.unwrap();
    let (p, _) = recv_from(&sock, &mut buf, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(
        matches!(
            p,
            Packet::Error {
                code: ErrorCode::IllegalOperation,
                ..
            }
        ),
        "{p:?}"
    );
    assert_eq!(fetch(srv.addr, "sub/x", &[]).await.unwrap().data, b"x");

    let after = wait_for("results counted", |s| {
        s.not_found == before.not_found + 2 && s.ok == before.ok + 1
    })
    .await;
    assert_eq!(after.denied, before.denied + 1);
    assert_eq!(after.denied_escape, before.denied_escape);
    assert_eq!(after.error, before.error + 3);
    srv.stop().await;
}
