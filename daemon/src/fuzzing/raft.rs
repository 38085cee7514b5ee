//! `raft_frame`: a peer frame off the Raft port, decoded as
//! `wire::read_frame` does (length cap, then the JSON body as a `Request`,
//! as the server reads it, or a `Reply`, as the client does), and the
//! snapshot decoder (`store::SnapshotPayload::decode`) on every snapshot a
//! frame carries. An input that starts with zstd's frame magic is a bare
//! snapshot instead (what the `snapshot` table holds).
//!
//! Checked: a frame over the cap is refused before its body is read; what
//! decodes re-encodes to a fixed point (encode, decode, encode gives the
//! same bytes); a snapshot whose content inflates past
//! [`MAX_SNAPSHOT_JSON`] is refused (no zstd bomb), and one that decodes
//! re-encodes to the same state and meta.

use std::io::Read as _;

use serde::{de::DeserializeOwned, Serialize};

use crate::consensus::network::wire::{Reply, Request, MAX_FRAME};
use crate::consensus::TypeConfig;
use crate::store::{SnapshotPayload, MAX_SNAPSHOT_JSON};

/// zstd's frame magic number, little-endian on the wire.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

pub fn raft_frame(data: &[u8]) {
    if data.starts_with(&ZSTD_MAGIC) {
        snapshot(data);
        return;
    }
    let Some((len, body)) = data.split_first_chunk::<4>() else {
        return;
    };
    let len = u32::from_be_bytes(*len);
    if len > MAX_FRAME {
        // read_frame refuses here, before allocating.
        return;
    }
    // read_exact: a short body is an EOF error, trailing bytes the next frame.
    let Some(body) = body.get(..len as usize) else {
        return;
    };
    // A snapshot sent whole in one chunk is what the receiver decodes as is.
    if let Some(Request::SnapshotChunk {
        data,
        offset: 0,
        done: true,
        ..
    }) = fixed_point::<Request>(body)
    {
        snapshot(&data);
    }
    let _ = fixed_point::<Reply>(body);
}

/// Decodes `body` as JSON of `T`; if it decodes, encode, decode and encode
/// again must give the same bytes.
fn fixed_point<T: Serialize + DeserializeOwned>(body: &[u8]) -> Option<T> {
    let v: T = serde_json::from_slice(body).ok()?;
    let once = serde_json::to_vec(&v).expect("a decoded frame encodes");
    let back: T = serde_json::from_slice(&once)
        .unwrap_or_else(|e| panic!("re-encoded frame does not decode: {e}"));
    let twice = serde_json::to_vec(&back).expect("a decoded frame encodes");
    assert_eq!(once, twice, "frame encoding is not a fixed point");
    Some(v)
}

/// How many bytes `data` inflates to, counted without keeping them, up to
/// `limit` (zstd's own streaming decoder, not the one under test).
fn inflated_len(data: &[u8], limit: u64) -> Option<u64> {
    let dec = zstd::stream::read::Decoder::new(data).ok()?;
    let mut sink = std::io::sink();
    // A corrupt frame ends the count where it fails: still a lower bound.
    let mut counted = CountingReader { inner: dec, n: 0 }.take(limit);
    let _ = std::io::copy(&mut counted, &mut sink);
    Some(counted.into_inner().n)
}

struct CountingReader<R> {
    inner: R,
    n: u64,
}

impl<R: std::io::Read> std::io::Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n += k as u64;
        Ok(k)
    }
}

fn snapshot(data: &[u8]) -> Option<SnapshotPayload<TypeConfig>> {
    let limit = MAX_SNAPSHOT_JSON as u64;
    let big = inflated_len(data, limit + 1).is_some_and(|n| n > limit);
    let res = SnapshotPayload::<TypeConfig>::decode(data);
    if big {
        assert!(
            res.is_err(),
            "a snapshot inflating past {MAX_SNAPSHOT_JSON} bytes was accepted"
        );
    }
    let p = res.ok()?;
    let again = p.encode().expect("a decoded snapshot encodes");
    let q = SnapshotPayload::<TypeConfig>::decode(&again)
        .unwrap_or_else(|e| panic!("a re-encoded snapshot does not decode: {e}"));
    assert_eq!(q.state, p.state);
    assert_eq!(q.meta(), p.meta());
    Some(p)
}
