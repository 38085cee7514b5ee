//! The pure half of one read transfer: option negotiation and the send-window
//! state machine. No sockets, no clock, no files: the socket loop feeds it
//! events (an ACK arrived, the retransmit timer fired) and does what the
//! returned [`Action`] says.
//!
//! ```text
//!            start()
//!               │ options accepted?
//!        yes ┌──┴──┐ no
//!            ▼     ▼
//!       SendOack  SendData{1..=W}
//!            │        │
//!   ACK 0 ───┘        │◀──────────────┐
//!                     ▼               │ ACK n (acked < n < last):
//!              wait for ACK/timer ────┘   resend from n+1
//!               │          │
//!   ACK of last │          │ timer: resend window from acked+1,
//!               ▼          │ or GiveUp once retries are spent
//!           Complete       ▼
//! ```
//!
//! Blocks are numbered internally with an absolute `u64` (1 = first DATA
//! block) and only folded to the 16-bit wire number at the edge, rolling over
//! 65535 → 0 as tftp-hpa, atftp and iPXE expect for files past 32 MiB at 512-byte blocks.

/// Largest `timeout` option accepted (seconds). RFC 2349 allows 255; a
/// transfer that waits 255 s per retransmission holds its socket and
/// read-ahead for half an hour after its client left. A larger request is
/// not acknowledged, so the client keeps its own default and we ours.
pub const MAX_TIMEOUT_SECS: u8 = 10;
/// Retransmissions of the first OACK or DATA before the client answered
/// once. Until then its source address is unverified (an RRQ is one
/// spoofable datagram), and every retransmission is traffic we would send
/// a victim; a real client on a LAN answers the first one.
pub const MAX_UNVERIFIED_RETRIES: u32 = 2;

/// RFC 1350 block size, used when the client did not negotiate `blksize`.
pub const DEFAULT_BLKSIZE: u16 = 512;
/// RFC 2348 bounds.
pub const BLKSIZE_MIN: u16 = 8;
pub const BLKSIZE_MAX: u16 = 65464;
/// RFC 7440 allows windows up to 65535 blocks; we answer at most this many.
/// 64 blocks of 1468 bytes already fill a LAN path several times over, and the
/// cap bounds the unpaced burst one request can make us send.
pub const WINDOWSIZE_MAX: u16 = 64;

/// What the server agreed to, per option; `None` = not negotiated (absent from
/// the OACK). Only options the client asked for are ever `Some`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Negotiated {
    pub blksize: Option<u16>,
    /// RFC 2349 retransmission timeout in seconds.
    pub timeout: Option<u8>,
    /// RFC 2349 transfer size: for an RRQ, the file size we report.
    pub tsize: Option<u64>,
    pub windowsize: Option<u16>,
}

impl Negotiated {
    /// Decides the reply to a request's options for a file of `file_size`
    /// bytes. Unknown options and unusable values are ignored (RFC 2347: the
    /// server omits what it does not accept); too-large `blksize`/`windowsize`
    /// are answered with our maximum, which RFC 2348/7440 permit.
    #[must_use]
    pub fn from_request(options: &[(String, String)], file_size: u64) -> Self {
        let mut n = Negotiated::default();
        for (name, value) in options {
            let value = value.trim();
            // The first occurrence wins; a repeated option is ignored.
            match name.as_str() {
                "blksize" if n.blksize.is_none() => {
                    if let Ok(v) = value.parse::<u64>() {
                        if v >= u64::from(BLKSIZE_MIN) {
                            n.blksize = Some(v.min(u64::from(BLKSIZE_MAX)) as u16);
                        }
                    }
                }
                "timeout" if n.timeout.is_none() => {
                    if let Ok(v) = value.parse::<u8>() {
                        if (1..=MAX_TIMEOUT_SECS).contains(&v) {
                            n.timeout = Some(v);
                        }
                    }
                }
                // A client sends 0 in an RRQ; any number means "tell me".
                "tsize" if n.tsize.is_none() && value.parse::<u64>().is_ok() => {
                    n.tsize = Some(file_size);
                }
                "windowsize" if n.windowsize.is_none() => {
                    if let Ok(v) = value.parse::<u64>() {
                        if v >= 1 {
                            n.windowsize = Some(v.min(u64::from(WINDOWSIZE_MAX)) as u16);
                        }
                    }
                }
                _ => {}
            }
        }
        n
    }

    /// True when no option was accepted: then no OACK is sent and the
    /// transfer starts directly with DATA 1 (RFC 2347).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Negotiated::default()
    }

    #[must_use]
    pub fn block_size(&self) -> u16 {
        self.blksize.unwrap_or(DEFAULT_BLKSIZE)
    }

    #[must_use]
    pub fn window_size(&self) -> u16 {
        self.windowsize.unwrap_or(1)
    }

    /// The OACK option list.
    #[must_use]
    pub fn oack_options(self) -> Vec<(String, String)> {
        let mut o = Vec::new();
        if let Some(v) = self.blksize {
            o.push(("blksize".to_owned(), v.to_string()));
        }
        if let Some(v) = self.timeout {
            o.push(("timeout".to_owned(), v.to_string()));
        }
        if let Some(v) = self.tsize {
            o.push(("tsize".to_owned(), v.to_string()));
        }
        if let Some(v) = self.windowsize {
            o.push(("windowsize".to_owned(), v.to_string()));
        }
        o
    }
}

/// What the socket loop must do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send (or resend) the OACK, then arm the timer.
    SendOack,
    /// Send DATA for absolute blocks `first..=last`, then arm the timer.
    SendData { first: u64, last: u64 },
    /// Nothing to send (stale or duplicate ACK); keep the current timer.
    Wait,
    /// The client acknowledged the final block.
    Complete,
    /// Retries are exhausted: send an ERROR and stop.
    GiveUp,
}

/// Sender state of one read transfer.
///
/// Invariants: `acked <= sent_upto <= last_block`, and
/// `sent_upto - acked <= window`, so the 16-bit ACK number maps to exactly one
/// outstanding absolute block (the window is far smaller than 65536).
#[derive(Debug, Clone)]
pub struct Session {
    file_size: u64,
    block_size: u64,
    window: u64,
    /// Absolute number of the final block: the first one shorter than
    /// `block_size`, possibly empty (a file that is an exact multiple of the
    /// block size ends with a 0-byte DATA, RFC 1350).
    last_block: u64,
    /// Highest block the client acknowledged (0 = none yet, or the OACK).
    acked: u64,
    /// Highest block sent in the current window.
    sent_upto: u64,
    oack_pending: bool,
    retries: u32,
    max_retries: u32,
    retransmits: u64,
    finished: bool,
    /// The client answered once (an ACK of ours), so its source address is
    /// real; until then [`MAX_UNVERIFIED_RETRIES`] applies.
    verified: bool,
}

impl Session {
    /// `with_oack` is true when options were accepted; then the first DATA
    /// waits for the client's ACK 0 of the OACK.
    #[must_use]
    pub fn new(
        file_size: u64,
        block_size: u16,
        window: u16,
        with_oack: bool,
        max_retries: u32,
    ) -> Self {
        let block_size = u64::from(block_size.max(1));
        Session {
            file_size,
            block_size,
            window: u64::from(window.max(1)),
            last_block: file_size / block_size + 1,
            acked: 0,
            sent_upto: 0,
            oack_pending: with_oack,
            retries: 0,
            max_retries,
            retransmits: 0,
            finished: false,
            verified: false,
        }
    }

    /// The first thing to send.
    pub fn start(&mut self) -> Action {
        if self.oack_pending {
            Action::SendOack
        } else {
            self.send_window_from(1)
        }
    }

    /// An ACK with wire block number `block` arrived.
    pub fn on_ack(&mut self, block: u16) -> Action {
        if self.finished {
            return Action::Wait;
        }
        if self.oack_pending {
            if block != 0 {
                return Action::Wait;
            }
            self.oack_pending = false;
            self.retries = 0;
            self.verified = true;
            return self.send_window_from(1);
        }
        // Unfold the wire number relative to what is already acknowledged.
        let diff = u64::from(block.wrapping_sub(wire_block(self.acked)));
        let abs = self.acked + diff;
        if diff == 0 || abs > self.sent_upto {
            // diff == 0: a duplicate of the ACK we already acted on. Answering
            // it would double every later block (Sorcerer's Apprentice, RFC
            // 1123 4.2.3.1); a real loss is recovered by our timer instead.
            // abs > sent_upto: an old ACK from before the last wrap, or junk.
            return Action::Wait;
        }
        self.acked = abs;
        self.retries = 0;
        self.verified = true;
        if abs == self.last_block {
            self.finished = true;
            return Action::Complete;
        }
        // Either the whole window arrived, or the client saw a gap after
        // `abs` (RFC 7440 section 4): both continue right after it.
        self.send_window_from(abs + 1)
    }

    /// The retransmit timer fired without progress.
    pub fn on_timeout(&mut self) -> Action {
        if self.finished {
            return Action::Wait;
        }
        let budget = if self.verified {
            self.max_retries
        } else {
            self.max_retries.min(MAX_UNVERIFIED_RETRIES)
        };
        if self.retries >= budget {
            self.finished = true;
            return Action::GiveUp;
        }
        self.retries += 1;
        self.retransmits += 1;
        if self.oack_pending {
            Action::SendOack
        } else {
            self.send_window_from(self.acked + 1)
        }
    }

    fn send_window_from(&mut self, first: u64) -> Action {
        let last = (first + self.window - 1).min(self.last_block);
        self.sent_upto = last;
        Action::SendData { first, last }
    }

    /// Byte offset and length of absolute block `abs` (1-based, `<= last_block`).
    #[must_use]
    pub fn block_span(&self, abs: u64) -> (u64, usize) {
        let offset = (abs - 1) * self.block_size;
        let len = self.block_size.min(self.file_size.saturating_sub(offset));
        (offset, len as usize)
    }

    #[must_use]
    pub fn last_block(&self) -> u64 {
        self.last_block
    }

    /// Timer-driven resends so far (OACK or windows), for the transfer log.
    #[must_use]
    pub fn retransmits(&self) -> u64 {
        self.retransmits
    }
}

/// The on-the-wire block number of absolute block `abs`: rolls over 65535 → 0.
#[must_use]
pub fn wire_block(abs: u64) -> u16 {
    (abs & 0xffff) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn negotiation_accepts_clamps_and_ignores() {
        let n = Negotiated::from_request(
            &opts(&[
                ("blksize", "1468"),
                ("windowsize", "4"),
                ("tsize", "0"),
                ("timeout", "3"),
                ("multicast", ""),
            ]),
            3_000_000,
        );
        assert_eq!(
            n,
            Negotiated {
                blksize: Some(1468),
                timeout: Some(3),
                tsize: Some(3_000_000),
                windowsize: Some(4)
            }
        );
        assert_eq!(
            n.oack_options(),
            opts(&[
                ("blksize", "1468"),
                ("timeout", "3"),
                ("tsize", "3000000"),
                ("windowsize", "4")
            ])
        );

        // Too large → our max; too small / zero / non-numeric → dropped.
        let n = Negotiated::from_request(&opts(&[("blksize", "70000"), ("windowsize", "1000")]), 1);
        assert_eq!(
            (n.blksize, n.windowsize),
            (Some(BLKSIZE_MAX), Some(WINDOWSIZE_MAX))
        );
        let n = Negotiated::from_request(
            &opts(&[
                ("blksize", "7"),
                ("windowsize", "0"),
                ("timeout", "0"),
                ("tsize", "x"),
            ]),
            1,
        );
        assert!(n.is_empty(), "{n:?}");
        let n = Negotiated::from_request(&opts(&[("timeout", "256"), ("blksize", "-1")]), 1);
        assert!(n.is_empty(), "{n:?}");

        // Only what was asked: tsize alone gives an OACK with tsize alone.
        let n = Negotiated::from_request(&opts(&[("tsize", "0")]), 42);
        assert_eq!(n.oack_options(), opts(&[("tsize", "42")]));
        assert_eq!((n.block_size(), n.window_size()), (512, 1));

        // First occurrence wins.
        let n = Negotiated::from_request(&opts(&[("blksize", "1024"), ("blksize", "2048")]), 1);
        assert_eq!(n.blksize, Some(1024));
    }

    #[test]
    fn lockstep_without_options() {
        // 1000 bytes at 512: blocks 1 (512) and 2 (488).
        let mut s = Session::new(1000, 512, 1, false, 5);
        assert_eq!(s.start(), Action::SendData { first: 1, last: 1 });
        assert_eq!(s.block_span(1), (0, 512));
        assert_eq!(s.block_span(2), (512, 488));
        assert_eq!(s.on_ack(1), Action::SendData { first: 2, last: 2 });
        // Duplicate ACK 1: no resend (Sorcerer's Apprentice).
        assert_eq!(s.on_ack(1), Action::Wait);
        assert_eq!(s.on_ack(2), Action::Complete);
        assert_eq!(s.on_ack(2), Action::Wait);
        assert_eq!(s.on_timeout(), Action::Wait);
    }

    #[test]
    fn exact_multiple_and_empty_files_end_with_short_block() {
        let mut s = Session::new(1024, 512, 4, false, 5);
        assert_eq!(s.last_block(), 3);
        assert_eq!(s.start(), Action::SendData { first: 1, last: 3 });
        assert_eq!(s.block_span(3), (1024, 0));
        assert_eq!(s.on_ack(3), Action::Complete);

        let mut s = Session::new(0, 512, 1, false, 5);
        assert_eq!(s.start(), Action::SendData { first: 1, last: 1 });
        assert_eq!(s.block_span(1), (0, 0));
        assert_eq!(s.on_ack(1), Action::Complete);
    }

    #[test]
    fn oack_then_windows_with_mid_window_ack() {
        // 10 blocks of 100 bytes + empty 11th.
        let mut s = Session::new(1000, 100, 4, true, 5);
        assert_eq!(s.start(), Action::SendOack);
        // Anything but ACK 0 before the OACK is acknowledged is ignored.
        assert_eq!(s.on_ack(1), Action::Wait);
        assert_eq!(s.on_timeout(), Action::SendOack);
        assert_eq!(s.on_ack(0), Action::SendData { first: 1, last: 4 });
        assert_eq!(s.on_ack(4), Action::SendData { first: 5, last: 8 });
        // Client saw a gap after 6: resend from 7.
        assert_eq!(s.on_ack(6), Action::SendData { first: 7, last: 10 });
        // A late ACK of an older block and a duplicate are both ignored.
        assert_eq!(s.on_ack(5), Action::Wait);
        assert_eq!(s.on_ack(6), Action::Wait);
        // An ACK for a block never sent is ignored.
        assert_eq!(s.on_ack(11), Action::Wait);
        assert_eq!(
            s.on_ack(10),
            Action::SendData {
                first: 11,
                last: 11
            }
        );
        assert_eq!(s.on_ack(11), Action::Complete);
        assert_eq!(s.retransmits(), 1);
    }

    #[test]
    fn timeout_resends_window_and_gives_up_after_max_retries() {
        let mut s = Session::new(10_000, 512, 4, false, 3);
        assert_eq!(s.start(), Action::SendData { first: 1, last: 4 });
        assert_eq!(s.on_ack(2), Action::SendData { first: 3, last: 6 });
        for _ in 0..3 {
            assert_eq!(s.on_timeout(), Action::SendData { first: 3, last: 6 });
        }
        assert_eq!(s.on_timeout(), Action::GiveUp);
        assert_eq!(s.retransmits(), 3);
        // Finished: nothing more happens.
        assert_eq!(s.on_ack(6), Action::Wait);
        assert_eq!(s.on_timeout(), Action::Wait);
    }

    #[test]
    fn progress_resets_retry_budget() {
        let mut s = Session::new(10_000, 512, 1, false, 2);
        s.start();
        assert_eq!(s.on_timeout(), Action::SendData { first: 1, last: 1 });
        assert_eq!(s.on_timeout(), Action::SendData { first: 1, last: 1 });
        assert_eq!(s.on_ack(1), Action::SendData { first: 2, last: 2 });
        assert_eq!(s.on_timeout(), Action::SendData { first: 2, last: 2 });
        assert_eq!(s.on_timeout(), Action::SendData { first: 2, last: 2 });
        assert_eq!(s.on_timeout(), Action::GiveUp);
    }

    #[test]
    fn an_unverified_client_gets_few_retransmissions() {
        // No answer to the first DATA: two retransmissions, not five.
        let mut s = Session::new(10_000, 512, 1, false, 5);
        assert_eq!(s.start(), Action::SendData { first: 1, last: 1 });
        for _ in 0..MAX_UNVERIFIED_RETRIES {
            assert_eq!(s.on_timeout(), Action::SendData { first: 1, last: 1 });
        }
        assert_eq!(s.on_timeout(), Action::GiveUp);
        // Nor to the OACK.
        let mut s = Session::new(10_000, 512, 1, true, 5);
        assert_eq!(s.start(), Action::SendOack);
        for _ in 0..MAX_UNVERIFIED_RETRIES {
            assert_eq!(s.on_timeout(), Action::SendOack);
        }
        assert_eq!(s.on_timeout(), Action::GiveUp);
        // Once the client answered, the full budget applies.
        let mut s = Session::new(10_000, 512, 1, false, 5);
        s.start();
        s.on_ack(1);
        for _ in 0..5 {
            assert_eq!(s.on_timeout(), Action::SendData { first: 2, last: 2 });
        }
        assert_eq!(s.on_timeout(), Action::GiveUp);
    }

    #[test]
    fn the_timeout_option_has_a_ceiling() {
        let n = Negotiated::from_request(&opts(&[("timeout", "10")]), 1);
        assert_eq!(n.timeout, Some(MAX_TIMEOUT_SECS));
        let n = Negotiated::from_request(&opts(&[("timeout", "11")]), 1);
        assert_eq!(
            n.timeout, None,
            "not acknowledged: the server keeps its default"
        );
        let n = Negotiated::from_request(&opts(&[("timeout", "255")]), 1);
        assert!(n.oack_options().is_empty());
    }

    #[test]
    fn zero_retries_gives_up_on_first_timeout() {
        let mut s = Session::new(10, 512, 1, true, 0);
        assert_eq!(s.start(), Action::SendOack);
        assert_eq!(s.on_timeout(), Action::GiveUp);
    }

    #[test]
    fn block_numbers_roll_over_to_zero() {
        assert_eq!(wire_block(65535), 65535);
        assert_eq!(wire_block(65536), 0);
        assert_eq!(wire_block(65537), 1);
        assert_eq!(wire_block(131_072), 0);

        // 140_000 blocks of 8 bytes: the wire number wraps twice.
        let size = 8 * 140_000 + 3;
        let mut s = Session::new(size, 8, 4, true, 5);
        assert_eq!(s.start(), Action::SendOack);
        let mut action = s.on_ack(0);
        let mut next_expected = 1u64;
        loop {
            match action {
                Action::SendData { first, last } => {
                    assert_eq!(first, next_expected);
                    next_expected = last + 1;
                    // Around the wrap, also throw in the ACK 0 of the OACK and
                    // duplicates: they must be recognised as stale.
                    if first == 65_529 {
                        assert_eq!(last, 65_532);
                        assert_eq!(
                            s.on_ack(0),
                            Action::Wait,
                            "ACK 0 before block 65536 was sent"
                        );
                        assert_eq!(s.on_ack(wire_block(first - 1)), Action::Wait);
                    }
                    action = s.on_ack(wire_block(last));
                }
                Action::Complete => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(next_expected, s.last_block() + 1);
        assert_eq!(s.last_block(), 140_001);
        assert_eq!(s.block_span(140_001), (8 * 140_000, 3));
    }

    #[test]
    fn mid_window_ack_across_the_wrap() {
        // Windows of 7 start at 7k+1, so one spans 65535..=65541 across the wrap.
        let mut s = Session::new(8 * 70_000, 8, 7, false, 5);
        let mut action = s.start();
        // Advance window by window until the window containing the wrap.
        while let Action::SendData { first, last } = action {
            if last >= 65_536 {
                assert!(first <= 65_536);
                break;
            }
            action = s.on_ack(wire_block(last));
        }
        let Action::SendData { first, last } = action else {
            panic!("{action:?}")
        };
        assert!(first <= 65_535 && last >= 65_537, "window {first}..={last}");
        // The client got up to absolute 65536 (wire 0) and lost the next one.
        assert_eq!(
            s.on_ack(0),
            Action::SendData {
                first: 65_537,
                last: 65_543
            }
        );
        assert_eq!(s.on_ack(0), Action::Wait);
        assert_eq!(
            s.on_ack(wire_block(65_543)),
            Action::SendData {
                first: 65_544,
                last: 65_550
            }
        );
    }
}
