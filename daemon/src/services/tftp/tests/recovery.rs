//! Lost and repeated packets: a silent client, a lost OACK, a client ERROR, mid-window ACKs and duplicates.

#[allow(clippy::wildcard_imports)]
use super::*;

#[tokio::test]
async fn silent_client_makes_server_give_up() {
    let _g = METRICS_LOCK.lock().await;
    let srv = TestServer::start(Duration::from_millis(100), 2).await;
    srv.write("f", &pattern(4000, 3));
    let before = snap();

    let sock = UdpSocket::bind(LOCALHOST).await.unwrap();
    sock.send_to(&rrq("f", &[("windowsize", "2")]), srv.addr)
        .await
        .unwrap();
    let mut buf = [0u8; 700];
    let (p, tid) = recv_from(&sock, &mut buf, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(matches!(p, Packet::Oack { .. }), "{p:?}");
    sock.send_to(&Packet::Ack { block: 0 }.encode(), tid)
        .await
        .unwrap();
    // Now never ACK: the window (blocks 1, 2) comes 1 + 2 retries times, then an ERROR.
    let mut blocks = Vec::new();
    let err = loop {
        let (p, from) = recv_from(&sock, &mut buf, Duration::from_secs(3))
            .await
            .expect("server went silent without ERROR");
        assert_eq!(from, tid);
        match p {
            Packet::Data { block, .. } => blocks.push(block),
            Packet::Error { code, .. } => break code,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(blocks, vec![1, 2, 1, 2, 1, 2]);
    assert_eq!(err, ErrorCode::NotDefined);
    let after = wait_for("timeout counted", |s| s.timeout == before.timeout + 1).await;
    assert_eq!(after.active, before.active);
    assert_eq!(after.ok, before.ok);
    srv.stop().await;
}

#[tokio::test]
async fn oack_is_retransmitted_and_client_error_ends_transfer() {
    let _g = METRICS_LOCK.lock().await;
    let srv = TestServer::start(Duration::from_millis(100), 3).await;
    srv.write("f", b"data");
    let before = snap();

    let sock = UdpSocket::bind(LOCALHOST).await.unwrap();
    sock.send_to(&rrq("f", &[("tsize", "0")]), srv.addr)
        .await
        .unwrap();
    let mut buf = [0u8; 700];
    let (p1, tid) = recv_from(&sock, &mut buf, Duration::from_secs(2))
        .await
        .unwrap();
    let (p2, _) = recv_from(&sock, &mut buf, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(
        p1,
        Packet::Oack {
            options: vec![("tsize".into(), "4".into())]
        }
    );
    assert_eq!(p1, p2, "OACK not retransmitted on timeout");
    sock.send_to(
        &Packet::Error {
            code: ErrorCode::OptionNegotiation,
            message: "no".into(),
        }
        .encode(),
        tid,
    )
    .await
    .unwrap();
    let after = wait_for("error counted", |s| s.error == before.error + 1).await;
    assert_eq!(after.active, before.active);
    assert_eq!(after.timeout, before.timeout);
    srv.stop().await;
}

#[tokio::test]
async fn mid_window_ack_resends_from_there_and_duplicates_are_ignored() {
    let _g = METRICS_LOCK.lock().await;
    let srv = TestServer::start(Duration::from_secs(5), 5).await;
    let content = pattern(100 * 10, 5);
    srv.write("f", &content);

    let sock = UdpSocket::bind(LOCALHOST).await.unwrap();
    sock.send_to(
        &rrq("f", &[("blksize", "100"), ("windowsize", "4")]),
        srv.addr,
    )
    .await
    .unwrap();
    let mut buf = [0u8; 700];
    let wait = Duration::from_secs(2);
    let (_, tid) = recv_from(&sock, &mut buf, wait).await.unwrap();
    sock.connect(tid).await.unwrap();
    let ack = |b: u16| Packet::Ack { block: b }.encode();
    let mut window = Vec::new();
    sock.send(&ack(0)).await.unwrap();
    for _ in 0..4 {
        let (p, _) = recv_from(&sock, &mut buf, wait).await.unwrap();
        let Packet::Data { block, .. } = p else {
            panic!("{p:?}")
        };
        window.push(block);
    }
    assert_eq!(window, vec![1, 2, 3, 4]);
    // "Lost" 3 and 4: ACK 2, then a duplicate ACK 2 and a stale ACK 1 that must not trigger anything.
    sock.send(&ack(2)).await.unwrap();
    sock.send(&ack(2)).await.unwrap();
    sock.send(&ack(1)).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..4 {
        let (p, _) = recv_from(&sock, &mut buf, wait).await.unwrap();
        let Packet::Data { block, data } = p else {
            panic!("{p:?}")
        };
        let b = usize::from(block);
        assert_eq!(data, content[(b - 1) * 100..b * 100]);
        got.push(block);
    }
    assert_eq!(got, vec![3, 4, 5, 6]);
    // Nothing else is sent before the (5 s) timer: the duplicates were ignored.
    assert!(recv_from(&sock, &mut buf, Duration::from_millis(300))
        .await
        .is_none());
    sock.send(&ack(6)).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..5 {
        let (p, _) = recv_from(&sock, &mut buf, wait).await.unwrap();
        let Packet::Data { block, data } = p else {
            panic!("{p:?}")
        };
        got.push((block, data.len()));
        if data.len() < 100 {
            sock.send(&ack(block)).await.unwrap();
        } else if block == 10 {
            sock.send(&ack(10)).await.unwrap();
        }
    }
    assert_eq!(got, vec![(7, 100), (8, 100), (9, 100), (10, 100), (11, 0)]);
    srv.stop().await;
}
