//! RELEASE and DECLINE: only the holder, only to us; quarantine.

use super::*;

#[test]
fn decline_quarantines_the_address_until_the_deadline() {
    let mut s = Server::new();
    let bad = s.dora(mac(1));
    // Only the holder may decline.
    assert!(matches!(
        s.run(&decline(mac(2), bad)).0,
        Action::Drop { .. }
    ));
    let (a, _) = s.run(&decline(mac(1), bad));
    let until = s.now + 6000;
    assert_eq!(
        a,
        Action::Commit {
            cmd: Command::Decline {
                ip: bad,
                mac: mac(1),
                at: s.now,
                until
            }
        }
    );
    // The other 29 addresses go to 29 clients; the declined one to nobody.
    let mut others = vec![];
    for n in 2..=30 {
        let got = s.dora(mac(n));
        assert_ne!(got, bad);
        others.push((mac(n), got));
    }
    assert_eq!(
        s.run(&discover(mac(31))).0,
        Action::Drop {
            reason: "pool exhausted",
            malformed: false
        }
    );
    assert_eq!(
        s.run(&discover(mac(1))).0,
        Action::Drop {
            reason: "pool exhausted",
            malformed: false
        }
    );
    // Just before the deadline (the others renewed), still nothing.
    s.now = until - 1;
    for (m, a) in &others {
        let (_, sent) = s.run(&renew(*m, *a));
        assert_eq!(sent.unwrap().0.opts().msg_type(), Some(MessageType::Ack));
    }
    assert_eq!(
        s.run(&discover(mac(31))).0,
        Action::Drop {
            reason: "pool exhausted",
            malformed: false
        }
    );
    s.now = until;
    let (a, _) = s.run(&discover(mac(31)));
    assert!(matches!(a, Action::Offer { ip, .. } if ip == bad), "{a:?}");
}

#[test]
fn release_then_discover_gives_the_same_address_back() {
    let mut s = Server::new();
    let ip1 = s.dora(mac(1));
    // Only the holder can release, and only to us.
    assert!(matches!(
        s.run(&release(mac(2), ip1)).0,
        Action::Drop { .. }
    ));
    let mut foreign = release(mac(1), ip1);
    foreign
        .opts_mut()
        .insert(DhcpOption::ServerIdentifier(v4(99)));
    assert!(matches!(s.run(&foreign).0, Action::Drop { .. }));
    s.now += 10;
    let (a, _) = s.run(&release(mac(1), ip1));
    assert_eq!(
        a,
        Action::Commit {
            cmd: Command::Release { ip: ip1, at: s.now }
        }
    );
    assert!(!s.state().lease_of_ip(ip1).unwrap().is_active(s.now));
    // A newcomer prefers never-used addresses, so the released one waits.
    let ip2 = s.dora(mac(2));
    assert_ne!(ip2, ip1);
    let (a, _) = s.run(&discover(mac(1)));
    assert!(matches!(a, Action::Offer { ip, .. } if ip == ip1), "{a:?}");
    // Releasing twice is a no-op.
    assert!(matches!(
        s.run(&release(mac(1), ip1)).0,
        Action::Drop { .. }
    ));
}
