#!/usr/bin/python3
"""Answers IPv6 router solicitations arriving on IFACE with a router
advertisement of lifetime 0 (no prefix, no DHCPv6), sent only back into
IFACE, so that iPXE ends its IPv6 autoconfiguration at once instead of
waiting ~15 s for a router. Usage: ra_zero.py IFACE"""
import sys

from scapy.all import ICMPv6ND_RA, ICMPv6ND_RS, IPv6, Ether, sendp, sniff

iface = sys.argv[1]


def answer(p):
    if ICMPv6ND_RS not in p:
        return
    ra = (
        Ether(dst=p[Ether].src)
        / IPv6(src="fe80::1", dst="ff02::1", hlim=255)
        / ICMPv6ND_RA(routerlifetime=0, M=0, O=0)
    )
    sendp(ra, iface=iface, verbose=False)
    print("answered RS from", p[Ether].src, flush=True)


sniff(iface=iface, lfilter=lambda p: ICMPv6ND_RS in p, prn=answer, store=False)
