"""Delivery failures become a kind the pages put in words; permanent ones are not retried."""

from __future__ import annotations

import smtplib
import socket

import pytest

from nyxcore.services.mail_failures import FailureKind, failure_kind, words


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (smtplib.SMTPRecipientsRefused({"a@example.com": (550, b"5.1.1 no such user")}), FailureKind.ADDRESS_REFUSED),
        (smtplib.SMTPRecipientsRefused({"a@example.com": (450, b"4.2.1 try later")}), FailureKind.DEFERRED),
        (smtplib.SMTPDataError(550, b"5.1.1 mailbox unavailable"), FailureKind.ADDRESS_REFUSED),
        (smtplib.SMTPDataError(554, b"5.7.1 spam"), FailureKind.REJECTED),
        (smtplib.SMTPDataError(451, b"4.3.0 try again later"), FailureKind.DEFERRED),
        (smtplib.SMTPSenderRefused(550, b"5.1.0 sender", "no-reply@example.com"), FailureKind.REJECTED),
        (smtplib.SMTPAuthenticationError(535, b"5.7.8 bad credentials"), FailureKind.REJECTED),
        (smtplib.SMTPConnectError(421, b"too busy"), FailureKind.UNREACHABLE),
        (smtplib.SMTPServerDisconnected("Connection unexpectedly closed"), FailureKind.UNREACHABLE),
        (ConnectionRefusedError(111, "Connection refused"), FailureKind.UNREACHABLE),
        (TimeoutError("timed out"), FailureKind.UNREACHABLE),
        (socket.gaierror(-2, "Name or service not known"), FailureKind.UNREACHABLE),
        (ValueError("something else"), FailureKind.UNKNOWN),
    ],
)
def test_each_error_has_its_kind(exc: BaseException, kind: FailureKind) -> None:
    assert failure_kind(exc) is kind


def test_only_refusals_and_undecryptable_bodies_are_permanent() -> None:
    permanent = {kind for kind in FailureKind if kind.permanent}
    assert permanent == {FailureKind.ADDRESS_REFUSED, FailureKind.REJECTED, FailureKind.UNREADABLE}


def test_words_never_repeat_the_stored_value_and_read_unknown_kinds_plainly() -> None:
    assert words("address_refused") == "the mail server refused the address"
    assert words("unreachable") == "the mail server could not be reached"
    assert words("ConnectionRefusedError: [Errno 111]") == "sending failed"
    assert words(None) == "sending failed"
    assert all(kind.words and kind.value not in kind.words for kind in FailureKind if kind is not FailureKind.UNKNOWN)
