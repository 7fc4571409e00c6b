"""Asking DNS for TXT records (dnspython), through the configured resolver and with a timeout.

DNS_RESOLVER names the nameserver as "host:port" (or "host", port 53); empty: the system's
resolver (/etc/resolv.conf). DNS_TIMEOUT_SECONDS bounds the whole lookup, so a button press never
hangs a web worker.
"""

from __future__ import annotations

from dataclasses import dataclass

import dns.exception
import dns.name
import dns.resolver
from flask import current_app


class DnsUnavailable(Exception):
    """No nameserver answered in time (or none is configured)."""


@dataclass(frozen=True)
class ResolverSetting:
    """Where to ask: a nameserver's address and port, or None for the system's resolver."""

    host: str | None
    port: int = 53

    @classmethod
    def parse(cls, value: str) -> ResolverSetting:
        """ "127.0.0.1:5353", "[::1]:5353", "10.0.0.2" or "" (the system's). Raises ValueError."""
        value = value.strip()
        if not value:
            return cls(None)
        host, port = value, "53"
        if value.startswith("["):
            host, _, rest = value[1:].partition("]")
            port = rest.removeprefix(":") or "53"
        elif value.count(":") == 1:
            host, port = value.split(":")
        return cls(host, int(port))


def _resolver(setting: ResolverSetting, timeout: float) -> dns.resolver.Resolver:
    if setting.host is None:
        resolver = dns.resolver.Resolver()
    else:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [setting.host]
        resolver.port = setting.port
    resolver.timeout = timeout
    resolver.lifetime = timeout
    return resolver


def txt_records(name: str) -> list[str]:
    """The TXT strings published at `name` (each record's strings joined); [] when there are none.

    Raises DnsUnavailable when no nameserver answered within DNS_TIMEOUT_SECONDS.
    """
    config = current_app.config
    setting = ResolverSetting.parse(config["DNS_RESOLVER"])
    resolver = _resolver(setting, float(config["DNS_TIMEOUT_SECONDS"]))
    try:
        answer = resolver.resolve(name, "TXT", search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.name.NameTooLong, dns.name.LabelTooLong):
        return []
    except (dns.exception.Timeout, dns.resolver.NoNameservers, OSError) as exc:
        raise DnsUnavailable(str(type(exc).__name__)) from exc
    return [b"".join(record.strings).decode("utf-8", "replace") for record in answer]
