"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives, for tests.

    with running_mail_server() as server:
        ...  # point SMTP_HOST / SMTP_PORT at server.host / server.port
        message = server.wait_for(1)[0]
        link = server.links(message, "http://nyxcore.test/invite/")[0]

`server.refuse_next(n)` makes the next n deliveries fail with a temporary error (451), the way a
greylisting or overloaded server does, so that retries can be tested. `server.hold()` keeps every
message's DATA unanswered until `server.release()` (a slow server: a worker is caught mid-delivery),
and `server.stop()` / `server.start()` take the server away and bring it back on the same port.

`running_mail_sink()` is the benchmarks' server: the same aiosmtpd, in a process of its own, that
keeps each message's Message-ID and recipients, parses nothing, and reads each message's DATA in
blocks rather than line by line (see MailSink and BlockReadingSMTP).
"""

from __future__ import annotations

import asyncio
import collections
import multiprocessing
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP

from tests.helpers import HOST, free_port

_URL = re.compile(r"https?://[^\s\"'<>]+")
_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)


async def _offer_pipelining(session: Any, hostname: str, responses: list[str]) -> list[str]:
    """EHLO's reply with PIPELINING (RFC 2920) added, as real servers offer it. aiosmtpd reads the
    commands of a connection in order whether they came one per write or several, but does not say so."""
    session.host_name = hostname
    return [*responses[:-1], "250-PIPELINING", responses[-1]]


class CollectingHandler:
    """aiosmtpd handler: refuse the next `refusals` messages, accept and keep the rest."""

    def __init__(self, *, pipelining: bool = False) -> None:
        self.pipelining = pipelining  # offered in EHLO's reply: clients may send MAIL, RCPT and DATA at once
        self.received: list[bytes] = []  # as they arrived; parsed when a test reads them (`parsed`)
        self._parsed: list[EmailMessage] = []
        self.attempts = 0
        self.refusals = 0
        self.refusal_reply = "451 4.3.0 Try again later"
        self.data_received = 0  # DATA commands whose message arrived, answered or still held
        self._arrived = threading.Condition()
        self._released = threading.Event()
        self._released.set()

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        if self.pipelining:
            return await _offer_pipelining(session, hostname, responses)
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._arrived:
            self.data_received += 1
            self._arrived.notify_all()
        while not self._released.is_set():  # held: the client waits for the reply to its DATA
            await asyncio.sleep(0.02)
        with self._arrived:
            self.attempts += 1
            if self.refusals > 0:
                self.refusals -= 1
                return self.refusal_reply
            self.received.append(envelope.original_content or envelope.content)
            self._arrived.notify_all()
        return "250 2.0.0 Message accepted for delivery"

    def parsed(self) -> list[EmailMessage]:
        """Every message received so far, parsed (each once). Call it holding `_arrived`."""
        for data in self.received[len(self._parsed) :]:
            message = message_from_bytes(data, policy=policy.default)
            assert isinstance(message, EmailMessage)
            self._parsed.append(message)
        return list(self._parsed)


class MailServer:
    def __init__(self, host: str, port: int, handler: CollectingHandler) -> None:
        self.host, self.port, self.handler = host, port, handler
        self.controller: Controller | None = None

    def start(self) -> None:
        """Listen (again, on the same port, with the messages kept so far)."""
        if self.controller is None:
            self.controller = Controller(self.handler, hostname=self.host, port=self.port)
            self.controller.start()

    def stop(self) -> None:
        """Stop listening (connections are refused) until `start`."""
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def hold(self) -> None:
        """Leave every DATA from now on unanswered until `release` (each message is kept once released)."""
        self.handler._released.clear()

    def release(self) -> None:
        self.handler._released.set()

    def wait_for_data(self, count: int, timeout: float = 10.0) -> None:
        """Wait until `count` messages in all have reached DATA (held or not)."""
        deadline = time.monotonic() + timeout
        with self.handler._arrived:
            while self.handler.data_received < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no DATA number {count} within {timeout}s")
                self.handler._arrived.wait(left)

    @property
    def messages(self) -> list[EmailMessage]:
        with self.handler._arrived:
            return self.handler.parsed()

    @property
    def received(self) -> int:
        """How many messages were accepted (without parsing them, as a benchmark's clock runs)."""
        with self.handler._arrived:
            return len(self.handler.received)

    def deliveries(self, wanted: Callable[[str], bool] = lambda _: True) -> collections.Counter[str]:
        """How many messages were accepted for each recipient (`To`) that `wanted` keeps (all by default)."""
        return collections.Counter(to for m in self.messages if wanted(to := str(m["To"])))

    @property
    def attempts(self) -> int:
        """Every DATA command received, refused ones included."""
        return self.handler.attempts

    def refuse_next(self, count: int, reply: str = "451 4.3.0 Try again later") -> None:
        with self.handler._arrived:
            self.handler.refusals, self.handler.refusal_reply = count, reply

    def wait_for(self, count: int, timeout: float = 10.0) -> list[EmailMessage]:
        """The first `count` messages, waiting up to `timeout` seconds for them to arrive."""
        self.wait_for_count(count, timeout)
        with self.handler._arrived:
            return self.handler.parsed()[:count]

    def wait_for_count(self, count: int, timeout: float = 10.0) -> None:
        """Wait up to `timeout` seconds until `count` messages in all were accepted."""
        deadline = time.monotonic() + timeout
        with self.handler._arrived:
            while len(self.handler.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"expected {count} message(s) within {timeout}s, got {len(self.handler.received)}"
                    )
                self.handler._arrived.wait(left)

    def assert_quiet(self, seconds: float, expected: int = 0) -> None:
        """Wait `seconds` and check that exactly `expected` messages arrived in total."""
        time.sleep(seconds)
        assert len(self.messages) == expected, [m["Subject"] for m in self.messages]

    @staticmethod
    def text(message: EmailMessage) -> str:
        part = message.get_body(("plain",))
        assert part is not None, "no text/plain part"
        return str(part.get_content())

    @staticmethod
    def html(message: EmailMessage) -> str:
        part = message.get_body(("html",))
        assert part is not None, "no text/html part"
        return str(part.get_content())

    @classmethod
    def links(cls, message: EmailMessage, prefix: str) -> list[str]:
        """The distinct URLs in the text part that start with `prefix`, in order."""
        found = [url.rstrip(".,;)") for url in _URL.findall(cls.text(message))]
        return list(dict.fromkeys(url for url in found if url.startswith(prefix)))


@contextmanager
def running_mail_server(host: str = HOST, *, pipelining: bool = False) -> Iterator[MailServer]:
    """An SMTP server on a free loopback port for the duration of the block (offering PIPELINING if asked)."""
    handler = CollectingHandler(pipelining=pipelining)
    port = free_port(host)
    server = MailServer(host, port, handler)
    server.start()
    try:
        yield server
    finally:
        server.release()
        server.stop()


# --- The benchmarks' sink ------------------------------------------------------------------------


@dataclass(frozen=True)
class SinkReport:
    """What a sink accepted: each message's Message-ID (b"" when it had none) and its recipients."""

    message_ids: list[bytes]
    recipients: list[str]

    def duplicates(self) -> int:
        """Messages whose Message-ID arrived before (a message sent twice)."""
        return len(self.message_ids) - len(set(self.message_ids))


class SinkHandler:
    """aiosmtpd handler that accepts every message and notes its Message-ID and recipients, parsing
    nothing: a mail server written in C does not spend Python's email parser on each message, and a
    benchmark should not charge that to the sender. It offers PIPELINING, as Postfix, Exim and the
    hosted relays do, so a client that pipelines is measured as it would run against them."""

    def __init__(self, accepted: Synchronized[int]) -> None:
        self.accepted = accepted
        self.message_ids: list[bytes] = []
        self.recipients: list[str] = []

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        return await _offer_pipelining(session, hostname, responses)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data: bytes = envelope.original_content or envelope.content
        headers_end = data.find(b"\r\n\r\n")
        found = _MESSAGE_ID.search(data, 0, headers_end if headers_end >= 0 else len(data))  # headers only
        self.message_ids.append(found.group(1) if found else b"")
        self.recipients.extend(envelope.rcpt_tos)
        with self.accepted.get_lock():
            self.accepted.value += 1
        return "250 2.0.0 Message accepted for delivery"


_STUFFED_PERIOD = re.compile(rb"(?m)^\.")  # RFC 5321 4.5.2: a line's first period, doubled by the client
# `<local@domain>` whose both parts are dot-atoms (RFC 5322 3.2.3), after optional blanks: the address
# is the text between the brackets, as aiosmtpd's parse (the email package's get_angle_addr) finds it.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ANGLE_ADDRESS = re.compile(rf"[ \t]*<({_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>")


class BlockReadingSMTP(SMTP):  # type: ignore[misc]
    """aiosmtpd's server, but reading a message's DATA in a few reads (one for each line that ends with
    a period) where aiosmtpd awaits every line in turn: a mail server written in C reads it in blocks,
    and a benchmark should not charge the sender for a Python loop per line. The dialogue, the
    transparency rule and the handler are aiosmtpd's; the reader's limit must admit a whole message."""

    line_length_limit = 1 << 20  # the connection's StreamReader limit; command lengths are checked apart

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's MAIL FROM / RCPT TO address parse, with a plain `<local@domain>` taken as it is: the
        general parse builds a class and a token tree for every address, a fifth of the sink's CPU per
        message. The same address and rest as aiosmtpd's (tests/integration/test_mail_sink.py); anything
        else (quoted, comments, source routes, no brackets) goes to aiosmtpd's parse."""
        found = _PLAIN_ANGLE_ADDRESS.match(arg) if arg else None
        if found is None:
            return super()._getaddr(arg)  # type: ignore[no-any-return]
        rest = arg[found.end() :]
        if rest[:1] in (" ", "\t"):
            rest = rest.lstrip()  # the blanks after the address, as get_angle_addr's get_cfws takes them
        if rest.startswith("("):  # a comment: aiosmtpd's parse decides
            return super()._getaddr(arg)  # type: ignore[no-any-return]
        address = found.group(1)
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, rest

    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        data = b""
        while data != b".\r\n" and not data.endswith(b"\r\n.\r\n"):  # a line of one period ends it
            data += await self._reader.readuntil(b".\r\n")
        data = data[:-3]
        if data.startswith(b".") or b"\n." in data:  # the regex scans every byte; most messages have no such line
            data = _STUFFED_PERIOD.sub(b"", data)
        self.envelope.content = self.envelope.original_content = data
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)


class SinkController(Controller):  # type: ignore[misc]
    """aiosmtpd's Controller serving BlockReadingSMTP."""

    def factory(self) -> SMTP:
        return BlockReadingSMTP(self.handler, **self.SMTP_kwargs)


def _serve_sink(host: str, port: int, accepted: Synchronized[int], commands: Connection) -> None:
    """The sink process: serve until told to stop, answering "report" with a SinkReport."""
    handler = SinkHandler(accepted)
    controller = SinkController(handler, hostname=host, port=port)
    controller.start()
    commands.send("ready")
    try:
        while (command := commands.recv()) != "stop":
            assert command == "report", command
            commands.send(SinkReport(list(handler.message_ids), list(handler.recipients)))
    finally:
        controller.stop()


class MailSink:
    """A real SMTP server (aiosmtpd) for benchmarks, in a process of its own (`pid`, for measuring its
    CPU apart from the client's): counts what it accepts, keeps Message-IDs and recipients, parses nothing."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        context = multiprocessing.get_context("spawn")  # no copy of the benchmark's threads and sockets
        self._accepted = context.Value("q", 0)
        self._commands, theirs = context.Pipe()
        self._process = context.Process(
            target=_serve_sink, args=(host, port, self._accepted, theirs), name="smtp-sink", daemon=True
        )
        self._process.start()
        if not self._commands.poll(30) or self._commands.recv() != "ready":
            self.stop()
            raise RuntimeError("the SMTP sink did not start")

    @property
    def pid(self) -> int:
        assert self._process.pid is not None
        return self._process.pid

    @property
    def received(self) -> int:
        """How many messages were accepted so far."""
        return int(self._accepted.value)

    def wait_for_count(self, count: int, timeout: float = 10.0, poll: float = 0.002) -> None:
        """Wait up to `timeout` seconds until `count` messages in all were accepted."""
        deadline = time.monotonic() + timeout
        while self.received < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} message(s) within {timeout}s, got {self.received}")
            time.sleep(poll)

    def report(self) -> SinkReport:
        self._commands.send("report")
        report: SinkReport = self._commands.recv()
        return report

    def stop(self) -> None:
        if self._process.is_alive():
            self._commands.send("stop")
            self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)


@contextmanager
def running_mail_sink(host: str = HOST) -> Iterator[MailSink]:
    """A MailSink on a free loopback port for the duration of the block."""
    sink = MailSink(host, free_port(host))
    try:
        yield sink
    finally:
        sink.stop()
