//! Sending a window of DATA in few syscalls: the blocks are laid end to end
//! in one buffer and handed to the kernel with UDP GSO (`sendmsg` with a
//! `UDP_SEGMENT` control message), which cuts it back into one datagram per
//! block. Each block is `4 + blksize` bytes on the wire and only the file's
//! final block is shorter, and it always ends a window: exactly the shape
//! GSO wants (equal segments, a shorter last one).
//!
//! Why: a lock-step or windowed transfer at 1468-byte blocks is about
//! 700 datagrams per MiB, and one `send` per datagram made the syscall and
//! the per-packet trip through the stack (bridge, veth) most of the
//! server's CPU. One GSO send carries a 16-block window as one packet as far
//! as the device, or as the receiving socket on a veth/bridge path.
//!
//! A socket whose path cannot do GSO (`EIO`: no checksum offload; `EINVAL`:
//! a segment larger than the MTU; `EOPNOTSUPP`/`ENOPROTOOPT`: an old
//! kernel) falls back to one `send` per block for the rest of its transfer.

use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, SockaddrIn};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tracing::debug;

use super::packet::append_data;

/// The per-packet log target of the whole TFTP server (`server`'s, repeated
/// here so that this leaf does not import its caller).
const PACKET_TARGET: &str = "tandem::packet::tftp";

/// The kernel's `UDP_MAX_SEGMENTS` before Linux 6.10 (128 since): segments
/// one GSO send may carry.
const MAX_SEGMENTS: usize = 64;
/// Largest UDP payload of one send: the IPv4 total length (65535) minus the
/// IP and UDP headers, rounded down.
const MAX_BYTES: usize = 65_000;

/// Whether one send failed in a way that a send of one datagram would not.
fn gso_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EIO | Errno::EINVAL | Errno::EOPNOTSUPP | Errno::ENOPROTOOPT | Errno::EMSGSIZE)
    )
}

/// The DATA datagrams of one window, ready to send, and how to send them.
pub(super) struct Batch {
    /// Whole DATA packets, end to end; every one but the last is `segment` bytes.
    buf: Vec<u8>,
    /// `4 + blksize`: the size of every full DATA packet.
    segment: usize,
    /// Packets in `buf`.
    packets: usize,
    /// Packets one send may carry: 1 once GSO failed on this socket.
    per_send: usize,
}

impl Batch {
    pub(super) fn new(blksize: u16) -> Self {
        let segment = 4 + usize::from(blksize);
        Batch {
            buf: Vec::new(),
            segment,
            packets: 0,
            per_send: (MAX_BYTES / segment).clamp(1, MAX_SEGMENTS),
        }
    }

    /// True when the next block must wait for a send: the batch holds as
    /// many packets as one send may carry.
    pub(super) fn is_full(&self) -> bool {
        self.packets >= self.per_send
    }

    /// Appends DATA `block` carrying `payload`.
    pub(super) fn push(&mut self, block: u16, payload: &[u8]) {
        debug_assert!(
            self.buf.len() == self.packets * self.segment,
            "only the final packet of a batch may be short"
        );
        append_data(&mut self.buf, block, payload);
        self.packets += 1;
    }

    /// Sends every packet held and empties the batch. `Err` only when the
    /// client is certainly gone (ICMP port unreachable); other failures are
    /// logged and left to the retransmit timer, as for a single `send`.
    pub(super) async fn flush(&mut self, sock: &UdpSocket) -> Result<(), io::Error> {
        let res = self.send_all(sock).await;
        self.buf.clear();
        self.packets = 0;
        match res {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Err(e),
            Err(e) => {
                debug!(target: PACKET_TARGET, error = %e, "tftp send failed; the timer will retry");
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    async fn send_all(&mut self, sock: &UdpSocket) -> io::Result<()> {
        if self.packets > 1 && self.per_send > 1 {
            match send_gso(sock, &self.buf, self.segment).await {
                Ok(()) => return Ok(()),
                Err(e) if gso_unsupported(&e) => {
                    debug!(target: PACKET_TARGET, error = %e, "UDP GSO refused on this transfer's socket; one send per block from now on");
                    self.per_send = 1;
                }
                Err(e) => return Err(e),
            }
        }
        let mut last = Ok(());
        for packet in self.buf.chunks(self.segment) {
            match sock.send(packet).await {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Err(e),
                // One lost datagram of a window: the rest may still arrive.
                Err(e) => last = Err(e),
            }
        }
        last
    }
}

/// One `sendmsg` of `buf` on the connected `sock`, cut by the kernel into
/// datagrams of `segment` bytes (the last one shorter).
async fn send_gso(sock: &UdpSocket, buf: &[u8], segment: usize) -> io::Result<()> {
    let gso = u16::try_from(segment).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let fd = sock.as_raw_fd();
    // Waits for writability and retries on EWOULDBLOCK, as `send` does.
    let sent = sock
        .async_io(Interest::WRITABLE, || {
            sendmsg::<SockaddrIn>(
                fd,
                &[IoSlice::new(buf)],
                &[ControlMessage::UdpGsoSegments(&gso)],
                MsgFlags::MSG_DONTWAIT,
                None,
            )
            .map_err(io::Error::from)
        })
        .await?;
    if sent == buf.len() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "GSO send took {sent} of {} bytes",
            buf.len()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::tftp::packet::Packet;

    fn payload(block: u16, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| u8::try_from((i + usize::from(block) * 31) % 251).unwrap())
            .collect()
    }

    /// Sends `blocks` DATA packets of `blksize` (the last `tail` bytes) from
    /// one connected socket and returns the batch (to look at `per_send`)
    /// and every datagram the peer received, in order.
    async fn send_window(blksize: u16, blocks: u16, tail: usize) -> (Batch, Vec<Vec<u8>>) {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // The window is sent before the peer reads any of it.
        crate::services::link::grow_receive_queue(&rx, 4 << 20).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        tx.connect(rx.local_addr().unwrap()).await.unwrap();
        let mut batch = Batch::new(blksize);
        for b in 1..=blocks {
            let len = if b == blocks {
                tail
            } else {
                usize::from(blksize)
            };
            if batch.is_full() {
                batch.flush(&tx).await.unwrap();
            }
            batch.push(b, &payload(b, len));
        }
        batch.flush(&tx).await.unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 70_000];
        for _ in 0..blocks {
            let n = tokio::time::timeout(std::time::Duration::from_secs(2), rx.recv(&mut buf))
                .await
                .expect("a datagram per block")
                .unwrap();
            got.push(buf[..n].to_vec());
        }
        (batch, got)
    }

    fn assert_blocks(got: &[Vec<u8>], blksize: u16, tail: usize) {
        let n = got.len();
        for (i, d) in got.iter().enumerate() {
            let block = u16::try_from(i + 1).unwrap();
            let len = if i + 1 == n {
                tail
            } else {
                usize::from(blksize)
            };
            match Packet::parse(d) {
                Ok(Packet::Data { block: b, data }) => {
                    assert_eq!(b, block, "datagram {i}");
                    assert!(
                        data == payload(block, len).as_slice(),
                        "payload of block {block}"
                    );
                }
                other => panic!("datagram {i} is not DATA: {other:?}"),
            }
        }
    }

    /// Loopback does GSO: a 100-block window goes out in sends of 44 and
    /// arrives as 100 datagrams, in order, the last one short.
    #[tokio::test]
    async fn a_window_arrives_as_one_datagram_per_block() {
        let (batch, got) = send_window(1468, 100, 17).await;
        assert_eq!(batch.per_send, 44);
        assert_eq!(got.len(), 100);
        assert_blocks(&got, 1468, 17);
        // A final block that is empty (file size a multiple of blksize).
        let (_, got) = send_window(512, 5, 0).await;
        assert_blocks(&got, 512, 0);
    }

    /// Root only: in a network namespace of its own whose loopback MTU is
    /// below the segment size, GSO is refused (EINVAL); the batch falls back
    /// to one send per block (fragmented by IP), and every block arrives.
    #[test]
    fn without_gso_the_window_is_sent_block_by_block() {
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare (root?)");
            let up = std::process::Command::new("ip")
                .args(["link", "set", "lo", "up", "mtu", "1280"])
                .status()
                .expect("ip");
            assert!(up.success());
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let (batch, got) = rt.block_on(send_window(1468, 20, 100));
            assert_eq!(batch.per_send, 1, "GSO should have been refused");
            assert_blocks(&got, 1468, 100);
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p));
    }
}
