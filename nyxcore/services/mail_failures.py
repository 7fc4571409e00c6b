"""Why a delivery failed, as a small kind the pages can put in words, never the exception's text.

The exception's text can name hosts, ports and addresses and means little to an admin; the outbox
stores only the kind (`outbox_emails.failure`), the attempts and when the next try is due.
"""

from __future__ import annotations

import smtplib
from enum import StrEnum

# Replies that refuse the recipient: mailbox unavailable, user not local, mailbox name not allowed.
_ADDRESS_REFUSED_CODES = frozenset({550, 551, 553})


class FailureKind(StrEnum):
    ADDRESS_REFUSED = "address_refused"  # permanent: the server will not take mail for this address
    REJECTED = "rejected"  # permanent: the server refused the message (or our login)
    DEFERRED = "deferred"  # temporary: the server asked us to try again later
    UNREACHABLE = "unreachable"  # no connection, or it dropped
    UNREADABLE = "unreadable"  # the stored body does not decrypt (a missing key)
    UNKNOWN = "unknown"

    @property
    def permanent(self) -> bool:
        """Trying again cannot help."""
        return self in (FailureKind.ADDRESS_REFUSED, FailureKind.REJECTED, FailureKind.UNREADABLE)

    @property
    def words(self) -> str:
        """What the pages say about it."""
        return _WORDS[self]


_WORDS = {
    FailureKind.ADDRESS_REFUSED: "the mail server refused the address",
    FailureKind.REJECTED: "the mail server refused the message",
    FailureKind.DEFERRED: "the mail server asked to try again later",
    FailureKind.UNREACHABLE: "the mail server could not be reached",
    FailureKind.UNREADABLE: "the stored message could not be decrypted (an operator must restore its key)",
    FailureKind.UNKNOWN: "sending failed",
}


def failure_kind(exc: BaseException) -> FailureKind:
    """The kind of a transport error: refused address, refused message, try later, unreachable."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        return FailureKind.DEFERRED if codes and all(400 <= c < 500 for c in codes) else FailureKind.ADDRESS_REFUSED
    if isinstance(exc, smtplib.SMTPResponseException) and not isinstance(exc, smtplib.SMTPConnectError):
        if 400 <= exc.smtp_code < 500:
            return FailureKind.DEFERRED
        if exc.smtp_code in _ADDRESS_REFUSED_CODES and not isinstance(exc, smtplib.SMTPSenderRefused):
            return FailureKind.ADDRESS_REFUSED
        return FailureKind.REJECTED if exc.smtp_code >= 500 else FailureKind.UNKNOWN
    if isinstance(exc, (smtplib.SMTPConnectError, smtplib.SMTPServerDisconnected, OSError)):
        return FailureKind.UNREACHABLE
    return FailureKind.UNKNOWN


def words(kind: str | None) -> str:
    """The words for a stored kind (an unknown or missing one reads as "sending failed")."""
    try:
        return FailureKind(kind or "").words
    except ValueError:
        return FailureKind.UNKNOWN.words
