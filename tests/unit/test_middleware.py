"""The WSGI middleware: forwarded headers from trusted proxies only, and bounded chunked bodies."""

from __future__ import annotations

import io
from ipaddress import ip_network

import pytest
from flask import Flask, request

from nyxcore.middleware import BoundedChunkedBody, TrustedProxyFix


def echo_app(trusted: str) -> Flask:
    app = Flask(__name__)

    @app.get("/")
    def who() -> dict[str, object]:
        return {"addr": request.remote_addr, "secure": request.is_secure}

    app.wsgi_app = TrustedProxyFix(  # type: ignore[method-assign]
        app.wsgi_app, [ip_network(trusted)], x_for=1, x_proto=1
    )
    return app


@pytest.mark.parametrize(
    ("peer", "seen", "secure"),
    [
        ("127.0.0.1", "203.0.113.9", True),  # the proxy: its headers are believed
        ("127.0.0.2", "127.0.0.2", False),  # anyone else: their socket address, plain http
        ("10.1.2.3", "10.1.2.3", False),
    ],
)
def test_forwarded_headers_count_only_from_a_trusted_peer(peer: str, seen: str, secure: bool) -> None:
    client = echo_app("127.0.0.1/32").test_client()
    reply = client.get(
        "/",
        headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"},
        environ_base={"REMOTE_ADDR": peer},
    )
    assert reply.json == {"addr": seen, "secure": secure}


def test_a_peer_without_an_address_is_no_trusted_proxy() -> None:
    fix = TrustedProxyFix(Flask(__name__).wsgi_app, [ip_network("127.0.0.1/32")])
    assert not fix.is_trusted("")  # gunicorn on a Unix socket
    assert not fix.is_trusted(None)
    assert fix.is_trusted("127.0.0.1")


def test_a_chunked_body_over_the_limit_reaches_the_app_with_its_length() -> None:
    seen: dict[str, object] = {}

    def app(environ, start_response):  # type: ignore[no-untyped-def]
        seen["length"] = environ["CONTENT_LENGTH"]
        seen["body"] = environ["wsgi.input"].read()
        start_response("200 OK", [])
        return [b""]

    bounded = BoundedChunkedBody(app, limit=10)
    environ = {
        "HTTP_TRANSFER_ENCODING": "chunked",
        "wsgi.input_terminated": True,
        "wsgi.input": io.BytesIO(b"x" * 1000),
    }
    bounded(environ, lambda *args: None)
    # One byte over the limit is read, never the rest; Werkzeug then refuses the length (413).
    assert seen == {"length": "11", "body": b"x" * 11}


def test_a_peer_is_judged_against_each_proxy_fixs_own_networks() -> None:
    # The parsed answer is kept per peer and set of networks: one app's trust never leaks into another's.
    loopback = TrustedProxyFix(Flask(__name__).wsgi_app, [ip_network("127.0.0.1/32")])
    private = TrustedProxyFix(Flask(__name__).wsgi_app, [ip_network("10.0.0.0/8")])
    for _ in range(2):
        assert loopback.is_trusted("127.0.0.1") and not private.is_trusted("127.0.0.1")
        assert private.is_trusted("10.9.8.7") and not loopback.is_trusted("10.9.8.7")
