//! The TFTP flood guards: a cap on transfers per client address, few
//! retransmissions to a client that never answered, and (in
//! `unknown_tid`'s own tests) ERROR 5 for a transfer the server does not know.

use super::super::server::MAX_TRANSFERS_PER_CLIENT;
use super::super::session::MAX_UNVERIFIED_RETRIES;
use super::*;

/// One address may hold `MAX_TRANSFERS_PER_CLIENT` transfers; the next RRQ
/// is refused with an ERROR and counted as `busy`, and once one ends the
/// address may start another.
#[tokio::test]
async fn one_address_holds_at_most_its_share_of_transfers() {
    let _g = METRICS_LOCK.lock().await;
    // Long timeout: the silent clients' transfers stay open for the test.
    let srv = TestServer::start(Duration::from_secs(5), 1).await;
    srv.write("f.bin", &pattern(4096, 3));
    let busy_before = transfers("busy");
    let mut held = Vec::new();
    let mut buf = [0u8; 600];
    for _ in 0..MAX_TRANSFERS_PER_CLIENT {
        let s = UdpSocket::bind(LOCALHOST).await.unwrap();
        s.send_to(&rrq("f.bin", &[]), srv.addr).await.unwrap();
        let (p, from) = recv_from(&s, &mut buf, Duration::from_secs(2))
            .await
            .expect("first DATA");
        assert!(matches!(p, Packet::Data { block: 1, .. }), "{p:?}");
        held.push((s, from));
    }
    let extra = UdpSocket::bind(LOCALHOST).await.unwrap();
    extra.send_to(&rrq("f.bin", &[]), srv.addr).await.unwrap();
    let (p, _) = recv_from(&extra, &mut buf, Duration::from_secs(2))
        .await
        .expect("a refusal");
    assert!(
        matches!(&p, Packet::Error { code: ErrorCode::NotDefined, message } if message.contains("too many")),
        "{p:?}"
    );
    assert_eq!(transfers("busy"), busy_before + 1);
    // One client aborts its transfer: room for one more.
    let (s, tid) = held.pop().unwrap();
    s.send_to(
        &Packet::Error {
            code: ErrorCode::NotDefined,
            message: "bye".into(),
        }
        .encode(),
        tid,
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        extra.send_to(&rrq("f.bin", &[]), srv.addr).await.unwrap();
        let (p, _) = recv_from(&extra, &mut buf, Duration::from_secs(2))
            .await
            .expect("an answer");
        if matches!(p, Packet::Data { block: 1, .. }) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no room after an abort: {p:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(held);
    srv.stop().await;
}

/// A client that never answers (a spoofed RRQ) gets the first DATA and
/// `MAX_UNVERIFIED_RETRIES` copies of it, not the configured 5.
#[tokio::test]
async fn a_silent_client_gets_few_retransmissions() {
    let _g = METRICS_LOCK.lock().await;
    let srv = TestServer::start(Duration::from_millis(100), 5).await;
    srv.write("f.bin", &pattern(4096, 4));
    let s = UdpSocket::bind(LOCALHOST).await.unwrap();
    s.send_to(&rrq("f.bin", &[]), srv.addr).await.unwrap();
    let mut buf = [0u8; 600];
    let mut data = 0;
    let mut gave_up = false;
    while let Some((p, _)) = recv_from(&s, &mut buf, Duration::from_secs(1)).await {
        match p {
            Packet::Data { block: 1, .. } => data += 1,
            Packet::Error { .. } => {
                gave_up = true;
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(gave_up, "the transfer ends with an ERROR");
    assert_eq!(
        data,
        1 + MAX_UNVERIFIED_RETRIES,
        "DATA 1 and its retransmissions"
    );
    srv.stop().await;
}
