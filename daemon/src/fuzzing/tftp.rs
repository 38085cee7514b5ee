//! `tftp_packet` and `tftp_session`: the TFTP wire parser, and one read
//! transfer's send window driven the way `server::transfer` drives it.

use crate::services::tftp::packet::{Packet, Request};
use crate::services::tftp::session::{
    wire_block, Action, Negotiated, Session, BLKSIZE_MAX, BLKSIZE_MIN, MAX_UNVERIFIED_RETRIES,
    WINDOWSIZE_MAX,
};

/// Parses one datagram; whatever parses must survive a round trip (the
/// parser keeps everything the encoder writes), DATA and plain ACKs byte for
/// byte; an RRQ's options must negotiate into the RFC bounds and an OACK
/// that parses back to the same options.
pub fn tftp_packet(data: &[u8]) {
    let Ok(p) = Packet::parse(data) else {
        return;
    };
    let bytes = p.encode();
    let again = Packet::parse(&bytes)
        .unwrap_or_else(|e| panic!("{p:?} encodes to {bytes:?}, which does not parse: {e}"));
    assert_eq!(again, p, "round trip through {bytes:?}");
    match &p {
        Packet::Data { .. } => assert_eq!(bytes, data, "DATA re-encodes differently"),
        Packet::Ack { .. } if data.len() == 4 => assert_eq!(bytes, data),
        Packet::Rrq(req) | Packet::Wrq(req) => check_request(req),
        _ => {}
    }
}

fn check_request(req: &Request) {
    assert!(!req.filename.is_empty() && !req.filename.contains('\0'));
    for size in [0, 1, 512, u64::MAX] {
        let n = Negotiated::from_request(&req.options, size);
        if let Some(b) = n.blksize {
            assert!((BLKSIZE_MIN..=BLKSIZE_MAX).contains(&b), "blksize {b}");
        }
        if let Some(w) = n.windowsize {
            assert!((1..=WINDOWSIZE_MAX).contains(&w), "windowsize {w}");
        }
        assert!(n.timeout.is_none_or(|t| t >= 1));
        assert!(n.tsize.is_none_or(|t| t == size));
        // Only what the client asked for is acknowledged.
        for (name, _) in n.oack_options() {
            assert!(
                req.options.iter().any(|(k, _)| *k == name),
                "{name} not asked"
            );
        }
        let oack = Packet::Oack {
            options: n.oack_options(),
        };
        let Ok(Packet::Oack { options }) = Packet::parse(&oack.encode()) else {
            panic!("OACK {oack:?} does not parse back");
        };
        assert_eq!(Negotiated::from_request(&options, size), n);
    }
}

/// Splits off a `u8`-length-prefixed chunk; `None` at the end of input.
fn chunk<'a>(data: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (&len, rest) = data.split_first()?;
    let len = usize::from(len).min(rest.len());
    let (c, rest) = rest.split_at(len);
    *data = rest;
    Some(c)
}

/// Input: file size (u32 BE, times 1..=256 by the next byte, so large files
/// are reachable), max retries (one byte, mod 8), one length-prefixed RRQ
/// whose options are negotiated as the server does, then events: a length
/// byte of 0 is a timer expiry, otherwise that many bytes are a datagram from
/// the client (an ACK drives the session, an ERROR ends it, the rest are
/// ignored, as `on_received` does).
///
/// Checked against a reference of the transfer: DATA always resumes right
/// after the highest block acknowledged, spans at most a window, never goes
/// past the last block, and covers the file exactly (full blocks, then one
/// short one); the OACK is sent exactly while one is pending; an ACK is acted
/// on only if it acknowledges a block sent and not yet acknowledged;
/// `GiveUp` comes after exactly `max_retries` resends without progress (at
/// most `MAX_UNVERIFIED_RETRIES` until the client has answered once: the
/// session's flood guard against spoofed RRQs); a
/// finished session stays finished. At the end, a well-behaved client
/// (acking each window) completes the transfer in the expected number of
/// windows.
pub fn tftp_session(mut data: &[u8]) {
    let Some((head, rest)) = data.split_first_chunk::<6>() else {
        return;
    };
    data = rest;
    let size = u64::from(u32::from_be_bytes([head[0], head[1], head[2], head[3]]))
        * (u64::from(head[4]) + 1);
    let max_retries = u32::from(head[5] % 8);
    let options = match chunk(&mut data).map(Packet::parse) {
        Some(Ok(Packet::Rrq(r))) => r.options,
        _ => Vec::new(),
    };
    let n = Negotiated::from_request(&options, size);
    let (bs, win) = (u64::from(n.block_size()), u64::from(n.window_size()));
    let mut s = Session::new(
        size,
        n.block_size(),
        n.window_size(),
        !n.is_empty(),
        max_retries,
    );
    let last = size / bs + 1;
    assert_eq!(s.last_block(), last);
    let mut m = Model {
        s: &mut s,
        size,
        bs,
        win,
        last,
        oack_pending: !n.is_empty(),
        acked: 0,
        sent_upto: 0,
        retries: 0,
        max_retries,
        verified: false,
        finished: false,
    };
    let a = m.s.start();
    m.after(a, Event::Start);
    while let Some(c) = chunk(&mut data) {
        if c.is_empty() {
            let a = m.s.on_timeout();
            m.after(a, Event::Timeout);
            continue;
        }
        match Packet::parse(c) {
            Ok(Packet::Ack { block }) => {
                let a = m.s.on_ack(block);
                m.after(a, Event::Ack(block));
            }
            Ok(Packet::Error { .. }) => return,
            _ => {}
        }
    }
    m.finish_cleanly();
}

#[derive(Clone, Copy, Debug)]
enum Event {
    Start,
    Timeout,
    Ack(u16),
}

/// The reference transfer beside the session under test.
struct Model<'a> {
    s: &'a mut Session,
    size: u64,
    bs: u64,
    win: u64,
    last: u64,
    oack_pending: bool,
    acked: u64,
    sent_upto: u64,
    retries: u32,
    max_retries: u32,
    /// The client answered once (an ACK acted on): the full retry budget.
    verified: bool,
    finished: bool,
}

impl Model<'_> {
    /// What the reference expects for `ev`, compared with what the session did.
    fn after(&mut self, got: Action, ev: Event) {
        let ctx = format!(
            "{ev:?} -> {got:?} (acked {}, sent {}, last {}, retries {}, oack {})",
            self.acked, self.sent_upto, self.last, self.retries, self.oack_pending
        );
        let want = self.expect(ev);
        assert_eq!(got, want, "{ctx}");
        if let Action::SendData { first, last } = got {
            assert!(first >= 1 && first <= last && last <= self.last, "{ctx}");
            assert!(last - first < self.win, "{ctx}");
            for abs in first..=last {
                let (offset, len) = self.s.block_span(abs);
                assert_eq!(offset, (abs - 1) * self.bs, "{ctx}");
                assert!(offset + len as u64 <= self.size, "{ctx}: past the end");
                if abs < self.last {
                    assert_eq!(len as u64, self.bs, "{ctx}: short block {abs}");
                } else {
                    assert!((len as u64) < self.bs, "{ctx}: last block not short");
                    assert_eq!(offset + len as u64, self.size, "{ctx}");
                }
            }
        }
    }

    fn window_from(&mut self, first: u64) -> Action {
        let last = (first + self.win - 1).min(self.last);
        self.sent_upto = last;
        Action::SendData { first, last }
    }

    fn expect(&mut self, ev: Event) -> Action {
        if self.finished && !matches!(ev, Event::Start) {
            return Action::Wait;
        }
        match ev {
            Event::Start if self.oack_pending => Action::SendOack,
            Event::Start => self.window_from(1),
            Event::Timeout
                if self.retries
                    >= if self.verified {
                        self.max_retries
                    } else {
                        self.max_retries.min(MAX_UNVERIFIED_RETRIES)
                    } =>
            {
                self.finished = true;
                Action::GiveUp
            }
            Event::Timeout => {
                self.retries += 1;
                if self.oack_pending {
                    Action::SendOack
                } else {
                    self.window_from(self.acked + 1)
                }
            }
            Event::Ack(0) if self.oack_pending => {
                self.oack_pending = false;
                self.retries = 0;
                self.verified = true;
                self.window_from(1)
            }
            Event::Ack(_) if self.oack_pending => Action::Wait,
            Event::Ack(b) => {
                // The one outstanding block whose wire number is `b`, if any.
                let Some(abs) = (self.acked + 1..=self.sent_upto).find(|&a| wire_block(a) == b)
                else {
                    return Action::Wait;
                };
                self.acked = abs;
                self.retries = 0;
                self.verified = true;
                if abs == self.last {
                    self.finished = true;
                    return Action::Complete;
                }
                self.window_from(abs + 1)
            }
        }
    }

    /// A client that acks every window whole: the transfer completes, one
    /// window per ACK. Only for transfers short enough to walk.
    fn finish_cleanly(&mut self) {
        if self.finished {
            return;
        }
        // Walking more would slow every execution for little: the window
        // logic is the same at any offset (the wrap is reached by inputs).
        let windows_left = (self.last - self.acked).div_ceil(self.win);
        if windows_left > 256 {
            return;
        }
        if self.oack_pending {
            let a = self.s.on_ack(0);
            self.after(a, Event::Ack(0));
        } else {
            // Whatever the fuzzer left outstanding is resent first.
            let a = self.s.on_timeout();
            self.after(a, Event::Timeout);
            if self.finished {
                return;
            }
        }
        for _ in 0..=windows_left {
            let b = wire_block(self.sent_upto);
            let a = self.s.on_ack(b);
            self.after(a, Event::Ack(b));
            if a == Action::Complete {
                return;
            }
        }
        panic!("a clean client did not complete the transfer");
    }
}
