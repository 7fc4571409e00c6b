"""Where outbox mail goes: SMTP (one connection per worker thread, reused) or the development console.

`mail.deliver` sends through a Transport; the console transport keeps the last messages for the
development outbox page.

A rendered message (`WireMessage`) goes out by `send_wire`: the SMTP dialogue of smtplib's `sendmail`
without its address parsing (two thirds of its CPU; the envelope's addresses are plain already), and
with MAIL, RCPT and DATA in one write when the server offers PIPELINING (RFC 2920): two round trips
per message instead of four (issue 15).
"""

from __future__ import annotations

import contextlib
import re
import select as io_select  # sqlalchemy.select is `select` here
import smtplib
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any, Protocol

from sqlalchemy import select

from nyxcore.extensions import db
from nyxcore.models import OutboxEmail
from nyxcore.services.mail_messages import WireMessage

Message = EmailMessage | WireMessage


@dataclass(frozen=True)
class MailSettings:
    sender: str
    host: str
    port: int
    username: str
    password: str
    starttls: bool
    timeout: int


class Transport(Protocol):
    def send(self, message: Message) -> None: ...


class ConsoleTransport:
    """Development mail: print each message and keep the last few for the dev outbox page."""

    recent: deque[dict[str, Any]] = deque(maxlen=50)

    def send(self, message: Message) -> None:
        if isinstance(message, WireMessage):
            message = message.parsed()
        text_part = message.get_body(("plain",))
        text = text_part.get_content() if text_part is not None else ""
        entry = {
            "to": message["To"],
            "subject": message["Subject"],
            "text": text,
            "at": datetime.now(UTC),
            "outbox_id": _outbox_id_of(message),
        }
        self.recent.appendleft(entry)
        print(f"--- email to {entry['to']}: {entry['subject']}\n{text}\n---", flush=True)


def _outbox_id_of(message: EmailMessage) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(message["Message-ID"]).strip("<>").partition("@")[0])
    except ValueError:
        return None


def console_mail_for(address: str, tenant_id: uuid.UUID | None) -> list[dict[str, Any]]:
    """The console transport's recent mail that this person may read: sent to `address`, or sent
    for team `tenant_id` (pass it only for someone who manages that team's invitations)."""
    entries = list(ConsoleTransport.recent)
    team_mail: set[uuid.UUID] = set()
    ids = [entry["outbox_id"] for entry in entries if entry["outbox_id"] is not None]
    if tenant_id is not None and ids:
        team_mail = set(
            db.session.scalars(
                select(OutboxEmail.id).where(OutboxEmail.id.in_(ids), OutboxEmail.tenant_id == tenant_id)
            )
        )
    wanted = address.strip().lower()
    return [
        entry
        for entry in entries
        if str(entry["to"]).strip().lower() == wanted or entry["outbox_id"] in team_mail
    ]


class SMTPTransport:
    """SMTP with one connection per worker thread, reused across messages and reopened when it drops."""

    def __init__(self, settings: MailSettings) -> None:
        self.settings = settings
        self._local = threading.local()
        # Every thread's connection, so that close_all can end them when the worker stops.
        self._open: set[smtplib.SMTP] = set()
        self._open_lock = threading.Lock()

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
        try:
            if s.starttls:
                smtp.starttls()
            if s.username:
                smtp.login(s.username, s.password)
        except BaseException:
            smtp.close()
            raise
        with self._open_lock:
            self._open.add(smtp)
        return smtp

    def send(self, message: Message) -> None:
        """Send over this thread's connection, opened (again) when there is none or the server closed it.

        A reused connection is checked without a round trip (has the server hung up?) before any
        command: a message is never sent twice because a connection broke under it. A failure after
        the check is the attempt's failure; the connection is dropped and the next message opens one.
        """
        smtp: smtplib.SMTP | None = getattr(self._local, "smtp", None)
        if smtp is not None and _hung_up(smtp):
            self.close()
            smtp = None
        if smtp is None:
            smtp = self._local.smtp = self._connect()
        try:
            if isinstance(message, WireMessage):
                send_wire(smtp, message)
            else:
                smtp.send_message(message)
        except (smtplib.SMTPServerDisconnected, OSError):
            self.close()
            raise

    def close(self) -> None:
        """Close this thread's connection."""
        smtp: smtplib.SMTP | None = getattr(self._local, "smtp", None)
        self._local.smtp = None
        if smtp is not None:
            self._quit(smtp)

    def close_all(self) -> None:
        """Close every thread's connection (when the worker stops); a later send reconnects."""
        with self._open_lock:
            connections, self._open = self._open, set()
        for smtp in connections:
            self._quit(smtp)

    def _quit(self, smtp: smtplib.SMTP) -> None:
        with self._open_lock:
            self._open.discard(smtp)
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()


# An address sent in the envelope as it is: what smtplib's quoteaddr would put between the brackets.
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+")
_LEADING_PERIOD = re.compile(rb"(?m)^\.")  # RFC 5321 4.5.2 transparency, as smtplib quotes


def send_wire(smtp: smtplib.SMTP, message: WireMessage) -> None:
    """`smtp.sendmail` for one rendered message, raising what it raises (SMTPSenderRefused,
    SMTPRecipientsRefused, SMTPDataError, SMTPServerDisconnected), and leaving the connection as it does
    (RSET after a refusal, closed after a 421). Pipelined when the server offers it."""
    sender, recipient = message.envelope_sender, message.recipient
    if not (_PLAIN_ADDRESS.fullmatch(sender) and _PLAIN_ADDRESS.fullmatch(recipient)):
        smtp.sendmail(sender, [recipient], message.data)  # quoted, or refused, by smtplib
        return
    smtp.ehlo_or_helo_if_needed()
    data = message.data
    if data.startswith(b".") or b"\n." in data:  # a scan in C first: the regex alone cost 15% of a message's CPU
        data = _LEADING_PERIOD.sub(b"..", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    size = f" SIZE={len(message.data)}" if smtp.does_esmtp and smtp.has_extn("size") else ""
    commands = [f"MAIL FROM:<{sender}>{size}\r\n", f"RCPT TO:<{recipient}>\r\n", "DATA\r\n"]
    pipelining = smtp.has_extn("pipelining")
    if pipelining:
        smtp.send("".join(commands))
    replies: list[tuple[int, bytes]] = []
    for command, accepted in zip(commands, ((250,), (250, 251), (354,)), strict=True):
        if not pipelining:
            smtp.send(command)
        replies.append(smtp.getreply())  # pipelined: every reply is read, refused or not
        if replies[-1][0] == 421 or (replies[-1][0] not in accepted and not pipelining):
            break  # 421: the server is closing the connection
    (mail_code, mail_reply), *rest = replies
    rcpt_code, rcpt_reply = rest[0] if rest else (503, b"not sent")
    data_code, data_reply = rest[1] if len(rest) > 1 else (503, b"not sent")
    if data_code == 354 and (mail_code != 250 or rcpt_code not in (250, 251)):
        smtp.send(b".\r\n")  # the server wants a message it has nobody to give to: an empty one ends it
        smtp.getreply()
    if mail_code != 250:
        _abandon(smtp, mail_code)
        raise smtplib.SMTPSenderRefused(mail_code, mail_reply, sender)
    if rcpt_code not in (250, 251):
        _abandon(smtp, rcpt_code)
        raise smtplib.SMTPRecipientsRefused({recipient: (rcpt_code, rcpt_reply)})
    if data_code != 354:
        _abandon(smtp, data_code)
        raise smtplib.SMTPDataError(data_code, data_reply)
    smtp.send(data + b".\r\n")
    code, reply = smtp.getreply()
    if code != 250:
        _abandon(smtp, code)
        raise smtplib.SMTPDataError(code, reply)


def _abandon(smtp: smtplib.SMTP, code: int) -> None:
    """After a refusal, as sendmail: close on 421 (the server is closing), else RSET for the next message."""
    if code == 421:
        smtp.close()
        return
    with contextlib.suppress(smtplib.SMTPServerDisconnected):  # shown by the next command, as smtplib's _rset
        smtp.rset()


def _hung_up(smtp: smtplib.SMTP) -> bool:
    """Whether an idle connection has something to read: the server closed it (or said 421 and will)."""
    sock = smtp.sock
    if sock is None:
        return True
    try:
        readable, _, _ = io_select.select([sock], [], [], 0)
    except (OSError, ValueError):  # closed under us
        return True
    return bool(readable)
