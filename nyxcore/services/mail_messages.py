"""An outbox message as it goes over SMTP: headers, a plain-text part and its HTML alternative.

`render` writes the bytes directly (quoted-printable parts, headers folded by the standard library
only when they need it), which costs the worker a tenth of what building an `EmailMessage` and
flattening it did: that was two thirds of its CPU per message (issue 15). An address that is not
ASCII (it needs SMTPUTF8) takes the general path, `build_message`, as before.
"""

from __future__ import annotations

import binascii
import email.policy
import email.utils
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage
from functools import lru_cache

_MAX_LINE = 78  # RFC 5322's recommended limit, as email.policy.default folds


class _HeaderClasses(HeaderRegistry):
    """The standard header registry, but building each header class once.

    CPython's HeaderRegistry creates a new class with `type()` for every header it parses, about
    fifteen per message here; that was a third of the worker's time spent building an email.
    """

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        cls = self._classes.get(key)
        if cls is None:
            cls = self._classes[key] = super().__getitem__(name)
        return cls


# email.policy.default (what EmailMessage() uses) with the class cache above; the same messages.
MESSAGE_POLICY = email.policy.default.clone(header_factory=_HeaderClasses())


@dataclass(frozen=True)
class WireMessage:
    """A rendered message: the SMTP envelope and the message's bytes (CRLF line ends)."""

    envelope_sender: str
    recipient: str
    data: bytes

    def parsed(self) -> EmailMessage:
        """The message as a reader gets it (for the development console)."""
        message = message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        return message


@lru_cache(maxsize=64)  # one MAIL_FROM per deployment: parsed once, not for every message
def sender_domain(sender: str) -> str:
    """The domain of the address in `sender` ("NyxCore <no-reply@example.com>" gives example.com)."""
    _, address = email.utils.parseaddr(sender)
    domain = address.rpartition("@")[2].strip().lower()
    return domain or "localhost"


def _message_headers(outbox_id: uuid.UUID, to: str, subject: str, sender: str) -> list[tuple[str, str]]:
    """Date, and a Message-ID in the sender's domain: the same on every retry, so that a receiver can
    drop a duplicate."""
    return [
        ("From", sender),
        ("To", to),
        ("Subject", subject),
        ("Date", email.utils.format_datetime(datetime.now(UTC))),
        ("Message-ID", f"<{outbox_id}@{sender_domain(sender)}>"),
    ]


def build_message(
    outbox_id: uuid.UUID, to: str, subject: str, sender: str, text_body: str, html_body: str
) -> EmailMessage:
    """The message as an `EmailMessage` (the general path, for addresses that need SMTPUTF8)."""
    message = EmailMessage(policy=MESSAGE_POLICY)
    for name, value in _message_headers(outbox_id, to, subject, sender):
        message[name] = value
    message.set_content(text_body)
    message.add_alternative(html_body, subtype="html")
    return message


@lru_cache(maxsize=64)
def _envelope_sender(sender: str) -> str:
    return email.utils.parseaddr(sender)[1]


@lru_cache(maxsize=1024)
def _folded(name: str, value: str) -> str:
    """`name: value` as email.policy.default writes it (encoded words, folding), without the line end."""
    folded: str = MESSAGE_POLICY.fold(name, MESSAGE_POLICY.header_store_parse(name, value)[1])
    return folded.rstrip("\n")


def _header(name: str, value: str) -> str:
    if "\r" in value or "\n" in value:  # as email.policy refuses them: no header injection
        raise ValueError("Header values may not contain linefeed or carriage return characters")
    line = f"{name}: {value}"
    if value.isascii() and len(line) <= _MAX_LINE and "=?" not in value and value == value.strip():
        return line  # what the policy would write, without parsing it
    return _folded(name, value)


def _part(subtype: str, content: str) -> str:
    lines = content.replace("\r\n", "\n").replace("\r", "\n")
    if not lines.endswith("\n"):
        lines += "\n"
    body = binascii.b2a_qp(lines.encode("utf-8"), istext=True).decode("ascii")
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"\n'
        f"Content-Transfer-Encoding: quoted-printable\n\n{body}"
    )


def render(
    outbox_id: uuid.UUID, to: str, subject: str, sender: str, text_body: str, html_body: str
) -> WireMessage | EmailMessage:
    """The message ready for SMTP: a plain-text part and its HTML alternative, both quoted-printable
    UTF-8 (whose encoded lines cannot contain the boundary). An `EmailMessage` when an address is not
    ASCII. Raises ValueError for a header value with a line break."""
    envelope_sender = _envelope_sender(sender)
    if not (to.isascii() and envelope_sender.isascii()):
        return build_message(outbox_id, to, subject, sender, text_body, html_body)
    headers = "\n".join(_header(name, value) for name, value in _message_headers(outbox_id, to, subject, sender))
    boundary = f"==============={secrets.token_hex(10)}=="
    text = (
        f'{headers}\nMIME-Version: 1.0\nContent-Type: multipart/alternative;\n boundary="{boundary}"\n\n'
        f"--{boundary}\n{_part('plain', text_body)}\n--{boundary}\n{_part('html', html_body)}\n--{boundary}--\n"
    )
    return WireMessage(envelope_sender, to, text.replace("\n", "\r\n").encode("ascii"))
