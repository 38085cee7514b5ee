#!/usr/bin/python3
"""Sends malformed DHCP packets at a server, from inside a client namespace.

Usage: malformed_dhcp.py IFACE
Each packet goes out as an L2 broadcast to UDP 67, as a real client's
DISCOVER would, so it reaches the server's DHCP socket. Prints how many it sent.
Cases: truncated BOOTP headers, an option whose length runs past the end,
option overload (52) pointing at garbage sname/file fields, hlen > 16,
a zero-length message-type option, and an endless option run without END.
"""
import random
import sys

from scapy.all import BOOTP, DHCP, IP, UDP, Ether, Raw, conf, get_if_hwaddr, sendp  # noqa: E402

conf.verb = 0
iface = sys.argv[1]
mac = get_if_hwaddr(iface)
macb = bytes.fromhex(mac.replace(":", ""))


def frame(payload: bytes):
    return Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / IP(src="0.0.0.0", dst="255.255.255.255") / UDP(sport=68, dport=67) / Raw(payload)


good = bytes(BOOTP(chaddr=macb, xid=0x1234, flags=0x8000) / DHCP(options=[("message-type", "discover"), "end"]))
header = good[:236]
cookie = b"\x63\x82\x53\x63"
cases = []
# Truncated at many points of the fixed header.
for cut in (1, 4, 27, 100, 235, 239):
    cases.append(good[:cut])
# An option whose length runs past the end of the packet.
cases.append(header + cookie + b"\x35\x01\x01" + b"\x0c\xff" + b"abc")
# Message type with length 0 and with length 9.
cases.append(header + cookie + b"\x35\x00\xff")
cases.append(header + cookie + b"\x35\x09\x01\xff")
# Option overload (52) = 3, with sname/file full of junk option bytes.
ovl = bytearray(header)
ovl[44:236] = bytes(random.getrandbits(8) for _ in range(192))
cases.append(bytes(ovl) + cookie + b"\x35\x01\x01\x34\x01\x03\xff")
# hlen larger than chaddr.
bad_hlen = bytearray(good)
bad_hlen[2] = 200
cases.append(bytes(bad_hlen))
# Options with lengths dhcproto does not check (80, 81, 94, 151).
for code in (80, 81, 94, 151):
    cases.append(header + cookie + b"\x35\x01\x01" + bytes([code, 1, 0]) + b"\xff")
# No END, options run to the end of the buffer.
cases.append(header + cookie + b"\x35\x01\x01" + b"\x0c\x05hello")
# Random garbage of BOOTP size.
for _ in range(5):
    cases.append(bytes(random.getrandbits(8) for _ in range(300)))

sendp([frame(c) for c in cases], iface=iface)
print(len(cases))
