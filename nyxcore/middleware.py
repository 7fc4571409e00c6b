"""WSGI middleware in front of the app: forwarded headers from trusted proxies only, bounded bodies."""

from __future__ import annotations

import io
from collections.abc import Iterable
from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import TYPE_CHECKING, Any

from werkzeug.middleware.proxy_fix import ProxyFix

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

_FORWARDED = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST", "HTTP_X_FORWARDED_PREFIX")


class TrustedProxyFix:
    """ProxyFix for requests whose peer is a trusted proxy; everyone else keeps their socket address.

    Werkzeug's ProxyFix trusts the last `x_for` entries of X-Forwarded-For from whoever connects, so
    a client that reaches gunicorn directly could claim any address and sidestep per-client rate
    limits. Here the headers of an untrusted peer are dropped before the app sees them.
    """

    def __init__(
        self, app: WSGIApplication, trusted: Iterable[IPv4Network | IPv6Network], **proxy_fix: Any
    ) -> None:
        self.app = app
        self.trusted = tuple(trusted)
        self.proxied = ProxyFix(app, **proxy_fix)
        # Behind a proxy every request comes from the same few peers: each address is parsed once.
        self._judged = lru_cache(maxsize=1024)(self._judge)

    def is_trusted(self, peer: str | None) -> bool:
        """True when the socket peer's address lies in one of the trusted networks."""
        return self._judged(peer or "")

    def _judge(self, peer: str) -> bool:
        try:
            address = ip_address(peer)
        except ValueError:  # a Unix socket or no peer at all
            return False
        return any(address in network for network in self.trusted)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if self.trusted and self.is_trusted(environ.get("REMOTE_ADDR")):
            return self.proxied(environ, start_response)
        for header in _FORWARDED:
            environ.pop(header, None)
        return self.app(environ, start_response)


class BoundedChunkedBody:
    """Make a chunked request body over `limit` bytes a 413, instead of silently cutting it short.

    A body with Content-Length over MAX_CONTENT_LENGTH is refused by Werkzeug before it is read. A
    chunked body announces no length, and Werkzeug then reads at most MAX_CONTENT_LENGTH bytes and
    parses them as if that were all (a form field quietly truncated). Here such a body is read, up to
    one byte over the limit, into memory (so at most `limit` bytes are ever held) and handed on with
    its length: over the limit, Werkzeug sees a length it refuses and the app answers its 413 page.
    """

    def __init__(self, app: WSGIApplication, limit: int | None) -> None:
        self.app = app
        self.limit = limit

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        chunked = environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked"
        if self.limit is not None and chunked and environ.get("wsgi.input_terminated"):
            body = environ["wsgi.input"].read(self.limit + 1)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            del environ["HTTP_TRANSFER_ENCODING"]
        return self.app(environ, start_response)
