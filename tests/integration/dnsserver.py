"""A real DNS server on loopback (dnslib, UDP) that answers TXT queries from a dict, for tests.

    with running_dns_server() as dns:
        dns.txt["example.org"] = ["nyxcore-verification=..."]
        ...  # point DNS_RESOLVER at dns.address ("127.0.0.1:<port>")

A name it does not know answers NXDOMAIN. `silent_dns_server()` binds a UDP port and never answers,
for timeouts.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dnslib import QTYPE, RCODE, RR, TXT
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from tests.helpers import HOST


class TxtZone(BaseResolver):  # type: ignore[misc]
    """Answers TXT records from `txt` (name without the final dot -> values); others: NXDOMAIN."""

    def __init__(self) -> None:
        self.txt: dict[str, list[str]] = {}
        self.queries: list[str] = []

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        self.queries.append(name)
        if name not in self.txt:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype == QTYPE.TXT:
            for value in self.txt[name]:
                reply.add_answer(RR(request.q.qname, QTYPE.TXT, rdata=TXT(value), ttl=60))
        return reply


class RunningDns:
    def __init__(self, zone: TxtZone, port: int) -> None:
        self.zone, self.port = zone, port

    @property
    def txt(self) -> dict[str, list[str]]:
        return self.zone.txt

    @property
    def address(self) -> str:
        """The DNS_RESOLVER setting that points at this server."""
        return f"{HOST}:{self.port}"


@contextmanager
def running_dns_server() -> Iterator[RunningDns]:
    zone = TxtZone()
    server = DNSServer(
        zone,
        address=HOST,
        port=0,
        logger=DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data", False),
    )
    server.start_thread()
    try:
        yield RunningDns(zone, server.server.server_address[1])
    finally:
        server.stop()
        server.server.server_close()


@contextmanager
def silent_dns_server() -> Iterator[str]:
    """A UDP port that takes queries and never answers: the DNS_RESOLVER setting for it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind((HOST, 0))
        yield f"{HOST}:{sink.getsockname()[1]}"
