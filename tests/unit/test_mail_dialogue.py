"""A rendered message's SMTP dialogue (services/mail_transports.send_wire), against a real aiosmtpd
server that offers PIPELINING or does not: the message arrives as smtplib's `sendmail` would deliver
it (dot-stuffing undone by the server, the same bytes), each refusal raises what `sendmail` raises and
so is classed the same (services/mail_failures), and the connection serves the next message after it.
"""

from __future__ import annotations

import smtplib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from nyxcore.services.mail_failures import FailureKind, failure_kind
from nyxcore.services.mail_messages import WireMessage, render
from nyxcore.services.mail_transports import send_wire
from tests.integration.mailserver import MailServer, running_mail_server

SENDER = "NyxCore <no-reply@nyx.example>"


def wire(to: str, text: str = "Hello\n", html: str = "<p>Hello</p>") -> WireMessage:
    message = render(uuid.uuid4(), to, "Hi", SENDER, text, html)
    assert isinstance(message, WireMessage)
    return message


class Commands:
    """What the client sent, as the server read it, and refusals to give for one command."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.refuse: dict[str, str] = {}


@pytest.fixture(params=[True, False], ids=["pipelining", "one command at a time"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[MailServer, Commands]]:
    commands = Commands()
    with running_mail_server(pipelining=request.param) as running:
        handler = running.handler

        async def handle_MAIL(
            server: Any, session: Any, envelope: Any, address: str, options: list[str]
        ) -> str:
            commands.seen.append(f"MAIL {address} {' '.join(options)}".strip())
            if "MAIL" in commands.refuse:
                return commands.refuse.pop("MAIL")
            envelope.mail_from, envelope.mail_options = address, options
            return "250 OK"

        async def handle_RCPT(
            server: Any, session: Any, envelope: Any, address: str, options: list[str]
        ) -> str:
            commands.seen.append(f"RCPT {address}")
            if "RCPT" in commands.refuse:
                return commands.refuse.pop("RCPT")
            envelope.rcpt_tos.append(address)
            return "250 OK"

        handler.handle_MAIL = handle_MAIL  # type: ignore[attr-defined]
        handler.handle_RCPT = handle_RCPT  # type: ignore[attr-defined]
        yield running, commands


@pytest.fixture
def client(server: tuple[MailServer, Commands]) -> Iterator[smtplib.SMTP]:
    running = server[0]
    smtp = smtplib.SMTP(running.host, running.port, timeout=10)
    try:
        yield smtp
    finally:
        smtp.close()


def test_the_message_arrives_as_sendmail_delivers_it(
    server: tuple[MailServer, Commands], client: smtplib.SMTP
) -> None:
    running, commands = server
    # Lines that begin with a period must be doubled on the wire and undone by the server.
    message = wire("ann@example.com", ".\n..two\n. three\n", "<p>.</p>\n.")
    send_wire(client, message)
    client.sendmail(message.envelope_sender, [message.recipient], message.data)
    first, second = running.handler.received[:2]
    assert first == second == message.data
    assert commands.seen[0] == f"MAIL no-reply@nyx.example SIZE={len(message.data)}"
    assert commands.seen[1] == "RCPT ann@example.com"


@pytest.mark.parametrize(
    ("command", "reply", "raised", "kind"),
    [
        ("MAIL", "451 4.3.0 Try again later", smtplib.SMTPSenderRefused, FailureKind.DEFERRED),
        ("MAIL", "553 5.1.8 Sender refused", smtplib.SMTPSenderRefused, FailureKind.REJECTED),
        ("RCPT", "550 5.1.1 No such mailbox", smtplib.SMTPRecipientsRefused, FailureKind.ADDRESS_REFUSED),
        ("RCPT", "450 4.2.0 Mailbox busy", smtplib.SMTPRecipientsRefused, FailureKind.DEFERRED),
        ("DATA", "451 4.3.0 Try again later", smtplib.SMTPDataError, FailureKind.DEFERRED),
        ("DATA", "554 5.6.0 Message refused", smtplib.SMTPDataError, FailureKind.REJECTED),
    ],
)
def test_a_refusal_raises_what_sendmail_raises_and_the_connection_takes_the_next_message(
    server: tuple[MailServer, Commands],
    client: smtplib.SMTP,
    command: str,
    reply: str,
    raised: type[Exception],
    kind: FailureKind,
) -> None:
    running, commands = server
    if command == "DATA":
        running.refuse_next(1, reply)
    else:
        commands.refuse[command] = reply
    with pytest.raises(raised) as refused:
        send_wire(client, wire("ann@example.com"))
    assert failure_kind(refused.value) is kind
    assert running.handler.received == []
    after = wire("bob@example.com")
    send_wire(client, after)
    assert running.handler.received == [after.data]


def test_a_server_that_closes_with_421_leaves_the_connection_closed(
    server: tuple[MailServer, Commands], client: smtplib.SMTP
) -> None:
    running, commands = server
    commands.refuse["MAIL"] = "421 4.3.2 Shutting down"
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        send_wire(client, wire("ann@example.com"))
    assert failure_kind(refused.value) is FailureKind.DEFERRED
    assert client.sock is None  # closed, as sendmail closes it: the transport opens a new one
    assert running.handler.received == []


def test_an_address_smtplib_must_quote_goes_through_sendmail(
    server: tuple[MailServer, Commands], client: smtplib.SMTP
) -> None:
    running, commands = server
    message = WireMessage("no-reply@nyx.example", '"ann smith"@example.com', wire("x@example.com").data)
    send_wire(client, message)
    assert running.handler.received == [message.data]
    assert commands.seen[-1] == 'RCPT "ann smith"@example.com'
