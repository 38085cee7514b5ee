//! Starting and stopping: cancel with transfers in flight, a missing root, the bound address.

#[allow(clippy::wildcard_imports)]
use super::*;

#[tokio::test]
async fn cancel_stops_server_with_transfers_in_flight() {
    let _g = METRICS_LOCK.lock().await;
    let srv = TestServer::start(Duration::from_secs(30), 5).await;
    srv.write("f", &pattern(10_000, 9));
    let before = snap();
    let sock = UdpSocket::bind(LOCALHOST).await.unwrap();
    sock.send_to(&rrq("f", &[]), srv.addr).await.unwrap();
    let mut buf = [0u8; 700];
    let (p, _) = recv_from(&sock, &mut buf, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(matches!(p, Packet::Data { block: 1, .. }));
    wait_for("transfer active", |s| s.active == before.active + 1).await;

    let started = std::time::Instant::now();
    srv.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "stop took {:?}",
        started.elapsed()
    );
    let (p, _) = recv_from(&sock, &mut buf, Duration::from_secs(2))
        .await
        .expect("client not told about shutdown");
    assert!(matches!(p, Packet::Error { .. }), "{p:?}");
    let after = snap();
    assert_eq!(after.active, before.active);
    assert_eq!(after.error, before.error + 1);
}

#[tokio::test]
async fn serve_rejects_missing_root_and_binds_given_addr() {
    let cancel = CancellationToken::new();
    let cfg = TftpConfig::new("/nonexistent/tandem-tftp-root");
    let sock = UdpSocket::bind(LOCALHOST).await.unwrap();
    let r = serve_socket(sock, cfg, cancel.clone()).await;
    assert!(matches!(r, Err(TftpError::Root { .. })), "{r:?}");

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = TftpConfig::new(dir.path());
    cfg.default_timeout = Duration::ZERO;
    let sock = UdpSocket::bind(LOCALHOST).await.unwrap();
    assert!(matches!(
        serve_socket(sock, cfg, cancel.clone()).await,
        Err(TftpError::Config(_))
    ));

    // `serve` binds itself; a taken port is a Bind error naming the address.
    let taken = UdpSocket::bind(LOCALHOST).await.unwrap();
    let addr = taken.local_addr().unwrap();
    let r = crate::services::tftp::serve(addr, TftpConfig::new(dir.path()), cancel).await;
    assert!(
        matches!(r, Err(TftpError::Bind { addr: a, .. }) if a == addr),
        "{r:?}"
    );
}
