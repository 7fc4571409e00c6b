"""The GitHub REST API, as NyxCore uses it: who a token belongs to, and the repositories it sees.

A small client over urllib (no redirects followed, bounded answers, GitHub's errors in words);
`GITHUB_API_URL` points it at GitHub Enterprise or, in tests, at a server on the loopback. It never
logs or repeats a token.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import Message
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import current_app

from nyxcore.errors import ExternalServiceError

log = logging.getLogger("nyxcore.github")

PER_PAGE = 30
MAX_PAGE = 1000
MAX_RESPONSE_BYTES = 5 * 1024 * 1024
API_VERSION = "2022-11-28"
UNREACHABLE = "GitHub could not be reached. Try again later."
UNREADABLE_ANSWER = "GitHub sent an answer NyxCore could not read. Try again later."
# Printable ASCII without spaces: every GitHub token format fits, and nothing that could break a header.
_NEXT_LINK = re.compile(r'rel="?next"?')


class TokenRejected(ExternalServiceError):
    """GitHub answered 401: the token is wrong, expired or revoked."""




@dataclass(frozen=True)
class Repository:
    full_name: str
    url: str | None  # only an http(s) link, whatever the API sent
    private: bool
    description: str
    language: str
    updated_at: datetime | None


@dataclass(frozen=True)
class RepositoryPage:
    items: list[Repository]
    page: int
    has_next: bool

    @property
    def has_previous(self) -> bool:
        return self.page > 1


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """Do not follow redirects: a redirect must never carry the token to another address."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class GitHubClient:
    """The few GitHub REST calls NyxCore makes, over urllib; every failure becomes a domain error."""

    def __init__(self, base_url: str, timeout: float) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("GITHUB_API_URL must be an http(s) URL")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_RefuseRedirects)

    def user_login(self, token: str) -> str:
        """The login of the account `token` belongs to (`GET /user`)."""
        body, _ = self._get(token, "/user")
        login = body.get("login") if isinstance(body, dict) else None
        if not isinstance(login, str) or not 0 < len(login) <= 100:
            raise ExternalServiceError(UNREADABLE_ANSWER)
        return login

    def repositories(self, token: str, *, page: int, per_page: int) -> tuple[list[Repository], bool]:
        """One page of the repositories the token's account can see, recently updated first,
        and whether another page follows."""
        params = {"per_page": per_page, "page": page, "sort": "updated"}
        body, headers = self._get(token, "/user/repos", params)
        if not isinstance(body, list):
            raise ExternalServiceError(UNREADABLE_ANSWER)
        items = [repo for repo in map(_repository, body) if repo is not None]
        link = headers.get("Link")
        has_next = bool(_NEXT_LINK.search(link)) if link is not None else len(body) >= per_page
        return items, has_next

    def _get(self, token: str, path: str, params: dict[str, Any] | None = None) -> tuple[Any, Message]:
        url = self.base_url + path + (f"?{urlencode(params)}" if params else "")
        request = urllib.request.Request(  # noqa: S310 (the scheme is checked in __init__)
            url,
            method="GET",
            headers={
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION,
                "User-Agent": "NyxCore",
            },
        )
        # Unredirected: urllib copies ordinary headers onto a redirected request.
        request.add_unredirected_header("Authorization", f"Bearer {token}")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                raw = response.read(MAX_RESPONSE_BYTES + 1)
                headers: Message = response.headers
        except urllib.error.HTTPError as exc:
            try:
                error = _error_for_status(exc.code, exc.headers)
            finally:
                exc.close()
            log.warning("GitHub answered %s to GET %s", exc.code, path)
            raise error from None
        except (OSError, http.client.HTTPException) as exc:
            # URLError, timeouts, refused or reset connections, TLS failures, truncated answers.
            log.warning("GitHub could not be reached for GET %s (%s)", path, type(exc).__name__)
            raise ExternalServiceError(UNREACHABLE) from None
        if len(raw) > MAX_RESPONSE_BYTES:
            raise ExternalServiceError(UNREADABLE_ANSWER)
        try:
            return json.loads(raw), headers
        except ValueError:
            raise ExternalServiceError(UNREADABLE_ANSWER) from None


def _error_for_status(status: int, headers: Message) -> ExternalServiceError:
    if status == 401:
        return TokenRejected("GitHub rejected the token.")
    if status in (403, 429):
        limited, reset = _rate_limit(headers)
        if limited or status == 429:
            when = f"after {reset:%H:%M} UTC" if reset else "later"
            return ExternalServiceError(f"GitHub rate limit reached, try again {when}.")
        return ExternalServiceError(
            "GitHub refused the request (HTTP 403). The token may lack the permission this needs."
        )
    if 300 <= status < 400:
        return ExternalServiceError(
            f"GitHub answered with a redirect (HTTP {status}) that NyxCore does not follow."
        )
    return ExternalServiceError(f"GitHub answered with an error (HTTP {status}). Try again later.")


def _rate_limit(headers: Message) -> tuple[bool, datetime | None]:
    """Whether GitHub's headers say a rate limit was hit, and when it lifts if they say so."""
    retry_after = (headers.get("Retry-After") or "").strip()
    if retry_after.isdigit():  # secondary rate limit
        return True, datetime.now(UTC) + timedelta(seconds=int(retry_after))
    if (headers.get("X-RateLimit-Remaining") or "").strip() == "0":
        reset = (headers.get("X-RateLimit-Reset") or "").strip()
        return True, datetime.fromtimestamp(int(reset), UTC) if reset.isdigit() else None
    return False, None


def _repository(item: Any) -> Repository | None:
    if not isinstance(item, dict) or not isinstance(item.get("full_name"), str):
        return None
    url = item.get("html_url")
    updated = item.get("updated_at")
    try:
        updated_at = datetime.fromisoformat(updated) if isinstance(updated, str) else None
    except ValueError:
        updated_at = None
    return Repository(
        full_name=item["full_name"],
        url=url if isinstance(url, str) and url.startswith(("https://", "http://")) else None,
        private=item.get("private") is True,
        description=_text(item.get("description")),
        language=_text(item.get("language")),
        updated_at=updated_at,
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def github_client() -> GitHubClient:
    """A client for the configured GITHUB_API_URL and GITHUB_TIMEOUT."""
    config = current_app.config
    return GitHubClient(config["GITHUB_API_URL"], float(config["GITHUB_TIMEOUT"]))
