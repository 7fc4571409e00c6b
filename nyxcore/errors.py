"""Domain errors raised by services; the app maps each to one status code in one place."""

from __future__ import annotations


class DomainError(Exception):
    """A request that the rules refuse. `message` is safe to show to the user."""

    status_code = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(DomainError):
    status_code = 400


class PermissionDenied(DomainError):
    status_code = 403


class EmailNotVerified(PermissionDenied):
    """The role would allow it, but the account's e-mail address is not verified yet."""


class NotFound(DomainError):
    status_code = 404

    def __init__(self, message: str = "Not found.", *, field: str | None = None) -> None:
        super().__init__(message, field=field)


class Conflict(DomainError):
    status_code = 409


class Gone(DomainError):
    status_code = 410


class RateLimited(DomainError):
    status_code = 429


class ExternalServiceError(DomainError):
    """A service NyxCore depends on (GitHub) refused, failed or could not be reached."""

    status_code = 502
