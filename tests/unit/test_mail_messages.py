"""The outbox message written directly as bytes (services/mail_messages.render) reads as the same
message as the one the standard library builds (build_message), whatever its headers and bodies
hold; and it travels through a real SMTP server (aiosmtpd), also on a connection reused after the
server hung up.
"""

from __future__ import annotations

import uuid
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest

from nyxcore.services.mail_messages import WireMessage, build_message, render
from nyxcore.services.mail_transports import MailSettings, SMTPTransport
from tests.integration.mailserver import running_mail_server

SENDER = "NyxCore <no-reply@nyx.example>"
TEXT = "Hello,\n\nJoin Nyx Ops: http://nyxcore.test/invite/abc_DEF-123\n\nThe NyxCore team\n"
HTML = '<p>Hello,</p>\n<p><a href="http://nyxcore.test/invite/abc_DEF-123">Join Nyx Ops</a></p>\n'

CASES = {
    "plain": ("ann@example.com", "You are invited to Nyx Ops", TEXT, HTML),
    "non-ASCII subject and bodies": (
        "ann@example.com",
        "Einladung zu Ünïcøde Ops — 東京",
        "Grüße aus Zürich 🎉\nZeile zwei\n",
        "<p>Grüße — <b>東京</b></p>",
    ),
    "long subject": ("ann@example.com", "You are invited to " + "A very long team name " * 8, TEXT, HTML),
    "encoded-word lookalike": ("ann@example.com", "=?utf-8?q?not_decoded?= Ops", TEXT, HTML),
    "awkward bodies": (
        "ann@example.com",
        "Hi",
        ".leading dot\r\nFrom the start\rtrailing space   \n= sign =3D\n" + "x" * 300 + "\n\n",
        "<p>" + "word " * 200 + "</p>\n.\n",
    ),
    "no final line end": ("ann@example.com", "Hi", "one line", "<p>one line</p>"),
}


def read(message: WireMessage | EmailMessage) -> EmailMessage:
    data = message.data if isinstance(message, WireMessage) else message.as_bytes()
    parsed = message_from_bytes(data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def normalised(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text if text.endswith("\n") else text + "\n"


@pytest.mark.parametrize("case", CASES)
def test_the_written_message_reads_as_the_standard_librarys(case: str) -> None:
    to, subject, text, html = CASES[case]
    outbox_id = uuid.uuid4()
    wire = render(outbox_id, to, subject, SENDER, text, html)
    assert isinstance(wire, WireMessage)
    assert wire.envelope_sender == "no-reply@nyx.example" and wire.recipient == to
    assert b"\n" not in wire.data.replace(b"\r\n", b"") and max(map(len, wire.data.split(b"\r\n"))) <= 78
    ours, theirs = read(wire), read(build_message(outbox_id, to, subject, SENDER, text, html))
    for name in ("From", "To", "Subject", "Message-ID", "MIME-Version", "Content-Type"):
        assert str(ours[name]) == str(theirs[name]) or name == "Content-Type", name
    assert ours.get_content_type() == "multipart/alternative"
    assert str(ours["Subject"]) == subject or "=?" in subject  # an encoded word is read as one, as before
    assert ours["Message-ID"] == f"<{outbox_id}@nyx.example>"
    for kind, sent in (("plain", text), ("html", html)):
        ours_part, theirs_part = ours.get_body((kind,)), theirs.get_body((kind,))
        assert ours_part is not None and theirs_part is not None
        assert normalised(ours_part.get_content()) == normalised(theirs_part.get_content()) == normalised(sent)
        assert ours_part.get_content_charset() == "utf-8"


def test_a_header_with_a_line_break_is_refused_as_the_standard_library_does() -> None:
    for subject in ("Hi\r\nBcc: everyone@example.com", "Hi\nX-Evil: 1"):
        with pytest.raises(ValueError, match="linefeed"):
            render(uuid.uuid4(), "ann@example.com", subject, SENDER, TEXT, HTML)
        with pytest.raises(ValueError, match="linefeed"):
            build_message(uuid.uuid4(), "ann@example.com", subject, SENDER, TEXT, HTML)


def test_an_address_that_needs_smtputf8_takes_the_standard_librarys_path() -> None:
    message = render(uuid.uuid4(), "jörg@exämple.com", "Hi", SENDER, TEXT, HTML)
    assert isinstance(message, EmailMessage) and message["To"] == "jörg@exämple.com"


def test_messages_arrive_whole_and_a_connection_the_server_closed_is_replaced() -> None:
    with running_mail_server() as server:
        transport = SMTPTransport(MailSettings(SENDER, server.host, server.port, "", "", False, 5))
        try:
            for case in CASES.values():
                to, subject, text, html = case
                transport.send(render(uuid.uuid4(), to, subject, SENDER, text, html))
            server.stop()  # the server hangs up on the idle pooled connection
            server.start()
            transport.send(render(uuid.uuid4(), "late@example.com", "Hi", SENDER, TEXT, HTML))
            received = server.wait_for(len(CASES) + 1)
        finally:
            transport.close_all()
        server.assert_quiet(0.2, expected=len(CASES) + 1)  # none twice
    assert server.attempts == len(CASES) + 1
    for message, (to, subject, text, _) in zip(received, CASES.values(), strict=False):
        assert message["To"] == to and (message["Subject"] == subject or "=?" in subject)
        assert normalised(server.text(message)) == normalised(text)  # leading dots and all
    assert received[-1]["To"] == "late@example.com"
