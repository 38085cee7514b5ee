//! Requests no client should send: refused by `Request::parse` or the
//! decision, counted by the loop; mutated packets never panic.

use dhcproto::v4::{Decodable, Decoder, HType, Opcode};
use dhcproto::Encodable;

use super::super::allocator::Pool;
use super::super::request as wire;
use super::*;

#[test]
fn malformed_and_foreign_requests_are_dropped() {
    let mut s = Server::new();
    let mut r = discover(mac(1));
    r.set_opcode(Opcode::BootReply);
    assert_eq!(
        s.run(&r).0,
        Action::Drop {
            reason: "op is not BOOTREQUEST",
            malformed: true
        }
    );
    let mut r = discover(mac(1));
    r.set_chaddr(&[1; 16]);
    assert_eq!(
        s.run(&r).0,
        Action::Drop {
            reason: "hardware address is not 6-byte Ethernet",
            malformed: true
        }
    );
    let mut r = discover(mac(1));
    r.set_htype(HType::from(6));
    assert!(matches!(s.run(&r).0, Action::Drop { .. }));
    assert!(matches!(
        s.run(&discover(Mac([0; 6]))).0,
        Action::Drop { .. }
    ));
    assert!(matches!(
        s.run(&discover(Mac([0xff; 6]))).0,
        Action::Drop { .. }
    ));
    assert!(matches!(
        s.run(&req(mac(1), MessageType::Offer)).0,
        Action::Drop { .. }
    ));
    let r = req(mac(1), MessageType::Request);
    assert!(
        matches!(s.run(&r).0, Action::Drop { .. }),
        "REQUEST with nothing to request"
    );
    // hlen > 16 in a decoded packet must not reach chaddr() (for callers
    // that used Message::decode rather than request::decode).
    let mut bytes = discover(mac(1)).to_vec().unwrap();
    bytes[2] = 200;
    let r = Message::decode(&mut Decoder::new(&bytes)).unwrap();
    assert!(matches!(s.run(&r).0, Action::Drop { .. }));
    assert!(s.offers.is_empty() && s.state().leases.is_empty());
}

/// Mutation fuzzing: valid requests with random bytes overwritten, decoded
/// the way the socket loop decodes them, must never make the handler
/// panic, and whatever it decides must stay within the pools.
#[test]
fn mutated_packets_never_panic_the_handler() {
    let mut rng = Rng(0x5eed_f00d);
    let seeds: Vec<Vec<u8>> = [
        with(discover(mac(1)), DhcpOption::UserClass(b"iPXE".to_vec())),
        select(mac(2), v4(100), SID),
        init_reboot(mac(3), v4(101)),
        relayed(renew(mac(4), Ipv4Addr::new(10, 1, 0, 100))),
        decline(mac(5), v4(102)),
        release(mac(6), v4(103)),
        bootp(RESERVED_MAC),
    ]
    .iter()
    .map(|m| m.to_vec().unwrap())
    .collect();
    let mut s = Server::new();
    for _ in 0..20 {
        s.dora(mac(200 + rng.below(50) as u8));
    }
    let mut decided = 0;
    for i in 0..20_000 {
        let mut b = seeds[i % seeds.len()].clone();
        for _ in 0..=rng.below(6) {
            let at = rng.below(b.len() as u64) as usize;
            b[at] = rng.next() as u8;
        }
        if rng.below(4) == 0 {
            b.truncate(rng.below(b.len() as u64) as usize);
        }
        let Ok(req) = wire::decode(&b) else {
            continue;
        };
        decided += 1;
        match s.run(&req).0 {
            Action::Offer { ip, .. } => {
                let st = s.state();
                let sub = st.config.subnet_for(ip).expect("offer inside a subnet");
                let view = Pool {
                    state: &st,
                    offers: &s.offers,
                    subnet: sub,
                    server_id: SID,
                    now: s.now,
                };
                assert!(
                    view.in_pool(ip) || st.config.reservation_of_ip(ip).is_some(),
                    "{ip}"
                );
            }
            Action::CommitThenReply {
                cmd: Command::Grant { lease },
                ..
            } => {
                assert_eq!(
                    s.cluster.last_applied(),
                    Some((Command::Grant { lease }, CommandResponse::Ok))
                );
            }
            Action::Commit { cmd } => {
                assert_eq!(s.cluster.last_applied(), Some((cmd, CommandResponse::Ok)));
            }
            _ => {}
        }
    }
    assert!(decided > 10_000, "only {decided} mutants decoded");
}
