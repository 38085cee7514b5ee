#!/usr/bin/python3
"""Broadcasts DHCPDISCOVERs from a client namespace, as a booting client
would, so that every node on the segment receives them (the XDP program and
the fencing of followers decide who answers).

Usage: dhcp_probe.py IFACE COUNT INTERVAL_SECONDS
Each DISCOVER has a fresh random xid, the interface's MAC as chaddr and the
broadcast flag set. Prints the number sent when done.
"""
import random
import sys
import time

from scapy.all import BOOTP, DHCP, IP, UDP, Ether, conf, get_if_hwaddr  # noqa: E402

conf.verb = 0
iface, count, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
mac = get_if_hwaddr(iface)
macb = bytes.fromhex(mac.replace(":", ""))
sock = conf.L2socket(iface=iface)
sent = 0
for _ in range(count):
    frame = (Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")
             / IP(src="0.0.0.0", dst="255.255.255.255")
             / UDP(sport=68, dport=67)
             / BOOTP(chaddr=macb, xid=random.getrandbits(32), flags=0x8000)
             / DHCP(options=[("message-type", "discover"), "end"]))
    sock.send(frame)
    sent += 1
    time.sleep(interval)
sock.close()
print(sent)
