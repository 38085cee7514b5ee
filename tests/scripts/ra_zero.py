#!/usr/bin/python3
"""Answers IPv6 router solicitations arriving on IFACE with a router
advertisement of lifetime 0 (no prefix, no DHCPv6: M = O = 0), sent only
back into IFACE, so that iPXE ends its IPv6 autoconfiguration at once
instead of waiting ~15 s for a router. Prints "listening on IFACE" once it
sniffs.

The advertisement is unicast to the soliciting host, at both layers (RFC
4861 6.2.6 allows it): iPXE drops an IPv6 multicast packet (ff02::1) that
comes in a unicast Ethernet frame, which is what this script sent before,
so iPXE never saw it (measured: its RS retries went on for 16 s). An RS
from :: gets the all-nodes form, ff02::1 in 33:33:00:00:00:01.

Solicitations the host itself sends out of IFACE are not answered.
Usage: ra_zero.py IFACE"""
import sys

from scapy.all import ICMPv6ND_RA, ICMPv6ND_RS, IPv6, Ether, get_if_hwaddr, sendp, sniff

iface = sys.argv[1]
own = get_if_hwaddr(iface).lower()


def answer(p):
    if ICMPv6ND_RS not in p or p[Ether].src.lower() == own:
        return
    if p[IPv6].src == "::":
        eth_dst, ip_dst = "33:33:00:00:00:01", "ff02::1"
    else:
        eth_dst, ip_dst = p[Ether].src, p[IPv6].src
    ra = (
        Ether(dst=eth_dst)
        / IPv6(src="fe80::1", dst=ip_dst, hlim=255)
        / ICMPv6ND_RA(routerlifetime=0, M=0, O=0)
    )
    sendp(ra, iface=iface, verbose=False)
    print("answered RS from", p[Ether].src, p[IPv6].src, flush=True)


sniff(
    iface=iface,
    lfilter=lambda p: ICMPv6ND_RS in p,
    prn=answer,
    store=False,
    started_callback=lambda: print("listening on", iface, flush=True),
)
