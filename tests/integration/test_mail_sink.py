"""The benchmarks' SMTP sink (tests/integration/mailserver.py): a real aiosmtpd server in a process of
its own that counts what it accepts and finds a message sent twice by its Message-ID."""

from __future__ import annotations

import smtplib

from tests.integration.mailserver import running_mail_sink


def message(message_id: str, body: str = "Hello") -> bytes:
    return f"Message-ID: {message_id}\r\nSubject: Hi\r\n\r\n{body}\r\n".encode()


def test_the_sink_counts_messages_and_finds_a_message_id_that_arrived_twice() -> None:
    with running_mail_sink() as sink:
        client = smtplib.SMTP(sink.host, sink.port, timeout=10)
        try:
            client.sendmail("a@example.com", ["one@example.com"], message("<1@example.com>"))
            client.sendmail("a@example.com", ["two@example.com"], message("<2@example.com>"))
            # The same message again; a Message-ID quoted in a body is not the message's own.
            client.sendmail("a@example.com", ["one@example.com"], message("<1@example.com>", "Message-ID: <3@x>"))
        finally:
            client.quit()
        sink.wait_for_count(3)
        report = sink.report()
    assert report.message_ids == [b"<1@example.com>", b"<2@example.com>", b"<1@example.com>"]
    assert report.recipients == ["one@example.com", "two@example.com", "one@example.com"]
    assert report.duplicates() == 1
