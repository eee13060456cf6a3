"""Client addresses as bdn compares them: parsed IPs, an IPv4-mapped IPv6 address taken as its IPv4 one.

A dual-stack listener (`[::]:8080`) reports an IPv4 client as `::ffff:10.1.2.3`; allow-lists
and peer lists name `10.1.2.3`, and both must mean the same client.
"""

from __future__ import annotations

import ipaddress

IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(address: str | None) -> IP | None:
    """The IP of a socket peer or a literal (brackets allowed), IPv4-mapped IPv6 as IPv4; None if not an IP."""
    try:
        ip = ipaddress.ip_address((address or "").strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
