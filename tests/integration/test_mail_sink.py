"""The benchmarks' SMTP sink (tests/integration/mailserver.py): a real aiosmtpd server in a process of
its own that counts what it accepts and finds a message sent twice by its Message-ID, and reads each
message as aiosmtpd does."""

from __future__ import annotations

import smtplib

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from tests.helpers import HOST, free_port
from tests.integration.mailserver import (
    BlockReadingSMTP,
    CollectingHandler,
    SinkController,
    running_mail_sink,
)


def message(message_id: str, body: str = "Hello") -> bytes:
    return f"Message-ID: {message_id}\r\nSubject: Hi\r\n\r\n{body}\r\n".encode()


def test_the_sink_counts_messages_and_finds_a_message_id_that_arrived_twice() -> None:
    with running_mail_sink() as sink:
        client = smtplib.SMTP(sink.host, sink.port, timeout=10)
        try:
            client.sendmail("a@example.com", ["one@example.com"], message("<1@example.com>"))
            client.sendmail("a@example.com", ["two@example.com"], message("<2@example.com>"))
            # The same message again; a Message-ID quoted in a body is not the message's own.
            client.sendmail(
                "a@example.com", ["one@example.com"], message("<1@example.com>", "Message-ID: <3@x>")
            )
        finally:
            client.quit()
        sink.wait_for_count(3)
        report = sink.report()
    assert report.message_ids == [b"<1@example.com>", b"<2@example.com>", b"<1@example.com>"]
    assert report.recipients == ["one@example.com", "two@example.com", "one@example.com"]
    assert report.duplicates() == 1


def test_the_sinks_server_reads_each_message_as_aiosmtpd_does() -> None:
    """The sink's block-reading DATA (BlockReadingSMTP) keeps what aiosmtpd's line-by-line DATA keeps:
    the period transparency undone, lines that end with a period, a message larger than a read."""
    messages = [
        b"Subject: a\r\n\r\nHi.\r\n.hidden\r\n..two\r\n.\r\nend.",
        b".a first line that begins with a period\r\n\r\nbody",
        b"Subject: only headers\r\n",
        b"x",
        b"Subject: long\r\n\r\n" + b"".join(b"line %d of a long message.\r\n" % n for n in range(5000)),
    ]
    received = []
    for server in (BlockReadingSMTP, SMTP):
        handler = CollectingHandler()
        port = free_port(HOST)
        controller = SinkController(handler, hostname=HOST, port=port) if server is BlockReadingSMTP else None
        controller = controller or Controller(handler, hostname=HOST, port=port)
        controller.start()
        try:
            client = smtplib.SMTP(HOST, port, timeout=10)
            for data in messages:
                client.sendmail("a@example.com", ["b@example.com"], data)
            client.quit()
        finally:
            controller.stop()
        received.append(handler.received)
    block_read, line_read = received
    assert block_read == line_read and len(block_read) == len(messages)
    assert block_read[0] == b"Subject: a\r\n\r\nHi.\r\n.hidden\r\n..two\r\n.\r\nend.\r\n"


def test_the_sinks_server_parses_envelope_addresses_as_aiosmtpd_does() -> None:
    """BlockReadingSMTP takes a plain `<local@domain>` without aiosmtpd's general parse; what it finds (the
    address and the parameters after it) is what aiosmtpd finds, for those and for every other form."""
    arguments = [
        "<invitee-r1-0001@bench.example> SIZE=2345",
        "<no-reply@localhost>",
        " <a@b.example>",
        "\t<a@b.example>  SIZE=1 BODY=8BITMIME",
        "<A+B_c=d/e{f}@EX-ample.org>",
        "<a@b.example>\t",
        "<a@b.example>x",
        "<a@b.example>(a comment) SIZE=1",
        "<a@b.example> (a comment) SIZE=1",
        "<a@b.example> \r\n SIZE=1",
        "<a.b@c.example>",
        "<a..b@c.example>",
        "<.a@c.example>",
        "<a.@c.example>",
        '<"quoted local"@c.example>',
        "<@route.example:a@b.example>",
        "<a@[192.0.2.1]>",
        "<a@b..example>",
        "<a@b.example.>",
        "<a@-b.example>",
        "a@b.example",
        "<>",
        "",
        "<" + "x" * 70 + "@b.example>",
    ]
    for limit in (0, 64):
        ours, stock = BlockReadingSMTP(CollectingHandler()), SMTP(CollectingHandler())
        ours.local_part_limit = stock.local_part_limit = limit  # a class attribute in aiosmtpd
        for argument in arguments:
            assert ours._getaddr(argument) == stock._getaddr(argument), (limit, argument)
    assert ours._getaddr("<invitee-r1-0001@bench.example> SIZE=2345") == ("invitee-r1-0001@bench.example", "SIZE=2345")
    assert ours._getaddr("<" + "x" * 70 + "@b.example>") == (None, None)  # over the local part's limit
