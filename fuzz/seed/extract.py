#!/usr/bin/python3
"""Turns capture.sh's pcap into seed corpora (issue 8):

- dhcp_decode_handle: every distinct UDP payload sent to port 67 (client
  DISCOVER/REQUEST/RELEASE from udhcpc and dhclient, relayed ones from
  perfdhcp);
- tftp_packet: every distinct TFTP datagram (RRQs to port 69, then the
  transfers' DATA, ACK, OACK and ERROR), DATA cut to its first 64 bytes of
  payload to keep files small;
- tftp_session: one seed per captured transfer, in the target's format
  (file size u32 BE, size multiplier byte 0, retries byte, the RRQ, then
  the client's ACKs in order, a timeout where the client retransmitted);
- raft_frame: each length-prefixed frame of the Raft TCP streams (port
  7480), both directions, deduplicated by (direction, variant, size class).

Usage (scapy imports only under /usr/bin/python3):
  /usr/bin/python3 fuzz/seed/extract.py /tmp/tandem-capture/lab.pcap fuzz/corpus
"""
import hashlib
import json
import os
import struct
import sys
from collections import defaultdict

from scapy.all import IP, TCP, UDP, rdpcap

pcap, out = sys.argv[1], sys.argv[2]
pkts = rdpcap(pcap)
seeds = defaultdict(dict)


def keep(target, data, limit=None):
    d = seeds[target]
    if limit is not None and len(d) >= limit:
        return
    d[hashlib.sha1(data).hexdigest()[:16]] = data


# --- UDP: DHCP and TFTP -----------------------------------------------------
tftp_peers = {}  # (client ip, client port) -> transfer index
transfers = []   # [rrq bytes, [events], file size]
relayed = 0
for p in pkts:
    if UDP not in p or IP not in p:
        continue
    u = p[UDP]
    data = bytes(u.payload)
    if u.dport == 67:
        # perfdhcp (relayed, from port 67) sends thousands alike: a few do.
        if u.sport != 67 or relayed < 12:
            keep("dhcp_decode_handle", data)
            relayed += u.sport == 67
    elif u.dport == 69 and data[:2] == b"\x00\x01":
        keep("tftp_packet", data)
        tftp_peers[(p[IP].src, u.sport)] = len(transfers)
        transfers.append([data, [], None])
    elif (p[IP].src, u.sport) in tftp_peers or (p[IP].dst, u.dport) in tftp_peers:
        op = data[:2]
        small = data[:4 + 64] if op == b"\x00\x03" else data
        key = op + (b"short" if op == b"\x00\x03" and len(data) < 516 else b"")
        if op != b"\x00\x03" or len(seeds["tftp_packet"]) < 40:
            keep("tftp_packet", small, limit=60)
        t = transfers[tftp_peers.get((p[IP].src, u.sport), tftp_peers.get((p[IP].dst, u.dport)))]
        if (p[IP].src, u.sport) in tftp_peers and op == b"\x00\x04":
            ev = t[1]
            if ev and ev[-1] == data:
                ev.append(b"")  # a duplicate ACK: the client's timer fired
            ev.append(data)

for rrq, events, _ in transfers:
    # The served file is 300000 bytes (capture.sh); a missing one got ERROR.
    head = struct.pack(">I", 300000) + bytes([0, 5])
    body = bytes([len(rrq)]) + rrq + b"".join(bytes([len(e)]) + e for e in events)
    keep("tftp_session", head + body[: 1 << 16])

# --- TCP: Raft frames ---------------------------------------------------------
streams = defaultdict(list)  # (src, sport, dst, dport) -> [(seq, payload)]
for p in pkts:
    if TCP not in p or IP not in p:
        continue
    t = p[TCP]
    data = bytes(t.payload)
    if data and 7480 in (t.sport, t.dport):
        streams[(p[IP].src, t.sport, p[IP].dst, t.dport)].append((t.seq, data))

classes = {}
for key, segs in streams.items():
    buf, seen = b"", set()
    for seq, data in sorted(segs):
        if seq in seen:
            continue
        seen.add(seq)
        buf += data
    while len(buf) >= 4:
        (n,) = struct.unpack(">I", buf[:4])
        if len(buf) < 4 + n:
            break
        frame, buf = buf[: 4 + n], buf[4 + n:]
        try:
            variant = next(iter(json.loads(frame[4:])))
        except Exception:
            variant = "?"
        cls = (key[3] == 7480, variant, n.bit_length())
        classes[cls] = classes.get(cls, 0) + 1
        if classes[cls] > 3:
            continue
        keep("raft_frame", frame)

for target, d in seeds.items():
    os.makedirs(os.path.join(out, target), exist_ok=True)
    for name, data in d.items():
        with open(os.path.join(out, target, name), "wb") as f:
            f.write(data)
    print(f"{target}: {len(d)} files, {sum(map(len, d.values()))} bytes")
