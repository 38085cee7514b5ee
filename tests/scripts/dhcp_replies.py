#!/usr/bin/python3
"""Lists the DHCP replies in a pcap file, one line each, in capture order:

    TIME SRC_MAC XID TYPE CHADDR YIADDR

TIME is the capture time in seconds (6 decimals), SRC_MAC the Ethernet
source (the answering server's interface), XID in hex, TYPE the DHCP
message type number (2 OFFER, 5 ACK, 6 NAK; 0 if absent), CHADDR the
client's hardware address, YIADDR the address given.

Usage: dhcp_replies.py PCAP
A reply is a BOOTP message with op 2 in an IPv4 UDP datagram from port 67
(a server answers a relay from 67 to 67, a client at 68). scapy reads the
pcap records; the headers are decoded here by offset, which is about a
hundred times faster than dissecting every packet, so a capture of tens of
thousands of packets can be read while the test runs. A capture that is
still being written may end in a partial record; reading stops there.
"""
import ipaddress
import struct
import sys

from scapy.utils import RawPcapReader  # noqa: E402

ETH_LEN = 14
ETHERTYPE_IPV4 = 0x0800
UDP_LEN = 8
BOOTP_FIXED = 236
MAGIC = b"\x63\x82\x53\x63"


def message_type(options):
    """The value of option 53 in a DHCP option block, or 0."""
    i = 0
    while i < len(options):
        code = options[i]
        if code == 255:
            break
        if code == 0:
            i += 1
            continue
        if i + 1 >= len(options):
            break
        length = options[i + 1]
        if code == 53 and length >= 1 and i + 2 < len(options):
            return options[i + 2]
        i += 2 + length
    return 0


def reply(frame):
    """(src_mac, xid, type, chaddr, yiaddr) if `frame` is a DHCP reply."""
    if len(frame) < ETH_LEN + 20 or struct.unpack("!H", frame[12:14])[0] != ETHERTYPE_IPV4:
        return None
    ip = frame[ETH_LEN:]
    ihl = (ip[0] & 0x0F) * 4
    if ip[0] >> 4 != 4 or ip[9] != 17 or len(ip) < ihl + UDP_LEN:
        return None
    udp = ip[ihl:]
    if struct.unpack("!H", udp[0:2])[0] != 67:
        return None
    bootp = udp[UDP_LEN:]
    if len(bootp) < BOOTP_FIXED + 4 or bootp[0] != 2 or bootp[BOOTP_FIXED:BOOTP_FIXED + 4] != MAGIC:
        return None
    src = ":".join(f"{b:02x}" for b in frame[6:12])
    xid = struct.unpack("!I", bootp[4:8])[0]
    yiaddr = ipaddress.IPv4Address(bootp[16:20])
    chaddr = ":".join(f"{b:02x}" for b in bootp[28:34])
    return src, xid, message_type(bootp[BOOTP_FIXED + 4:]), chaddr, yiaddr


def main(path):
    out = []
    for frame, meta in RawPcapReader(path):
        if len(frame) < meta.caplen:
            break  # the partial last record of a live capture
        r = reply(bytes(frame))
        if r is None:
            continue
        src, xid, kind, chaddr, yiaddr = r
        out.append(f"{meta.sec + meta.usec / 1e6:.6f} {src} {xid:08x} {kind} {chaddr} {yiaddr}")
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1])
