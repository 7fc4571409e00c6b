"""The team's GitHub connection: a token checked with GitHub, then kept sealed under the key ring.

The token is sealed with associated data naming its purpose and team (`seal_context`), so a
ciphertext copied into another team's row does not decrypt. It is decrypted only in memory, for
the one API call that needs it, and is never logged, put in an error, shown back or written to the
audit log: those get the GitHub login and the token's last four characters.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import Message
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload

from nyxcore.crypto import DecryptionError, Sealed
from nyxcore.errors import Conflict, ExternalServiceError, InvalidInput, NotFound
from nyxcore.extensions import db, keyring
from nyxcore.models import GitHubToken
from nyxcore.permissions import Operation
from nyxcore.roles import TenantRole
from nyxcore.services import audit
from nyxcore.tenancy import Actor

log = logging.getLogger("nyxcore.github")

VIEW = Operation("github.view", TenantRole.MEMBER)
MANAGE = Operation("github.manage", TenantRole.OWNER)  # connect and disconnect
PER_PAGE = 30
MAX_PAGE = 1000
MAX_RESPONSE_BYTES = 5 * 1024 * 1024
API_VERSION = "2022-11-28"
UNREADABLE = "The stored token cannot be read; reconnect GitHub."
UNREACHABLE = "GitHub could not be reached. Try again later."
UNREADABLE_ANSWER = "GitHub sent an answer NyxCore could not read. Try again later."
# Printable ASCII without spaces: every GitHub token format fits, and nothing that could break a header.
_TOKEN_SHAPE = re.compile(r"^[\x21-\x7e]{16,255}$")
_NEXT_LINK = re.compile(r'rel="?next"?')


class TokenRejected(ExternalServiceError):
    """GitHub answered 401: the token is wrong, expired or revoked."""


@dataclass(frozen=True)
class GitHubConnection:
    """What may be shown about a team's connection: never the token, only its last four characters."""

    login: str
    last_four: str
    set_at: datetime
    set_by: str | None  # the name of who set it; None once their account is gone
    problem: str | None  # why the stored token cannot be used, when it cannot


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


def seal_context(tenant_id: uuid.UUID) -> str:
    """The associated data that binds a stored token to its purpose and its team."""
    return f"github-token:{tenant_id}"


def _stored(tenant_id: uuid.UUID, *, for_update: bool = False) -> GitHubToken | None:
    query = select(GitHubToken).where(GitHubToken.tenant_id == tenant_id)
    return db.session.scalar(query.with_for_update() if for_update else query)


def _open(row: GitHubToken) -> str:
    """The stored token in plain text, for one call. Raises Conflict when it cannot be decrypted."""
    try:
        return (
            keyring.get()
            .decrypt(Sealed(row.key_id, row.nonce, row.ciphertext), seal_context(row.tenant_id))
            .decode()
        )
    except (DecryptionError, UnicodeDecodeError) as exc:
        log.warning("the stored GitHub token of team %s cannot be decrypted: %s", row.tenant_id, exc)
        raise Conflict(UNREADABLE) from None


def _checked_token(token: str) -> str:
    token = (token or "").strip()
    if not _TOKEN_SHAPE.match(token):
        raise InvalidInput(
            "That does not look like a GitHub token: paste the whole token, without spaces.", field="token"
        )
    return token


def connect(actor: Actor, token: str) -> str:
    """Check `token` with GitHub, then store it sealed for the actor's team, replacing any earlier one.

    Returns the GitHub login. Raises PermissionDenied (not an owner), InvalidInput for a malformed
    or rejected token and ExternalServiceError when GitHub cannot be asked; then nothing is stored.
    """
    MANAGE.check(actor)
    tenant_id, actor_id = actor.tenant_id, actor.user_id
    token = _checked_token(token)
    try:
        login = github_client().user_login(token)
    except TokenRejected as exc:
        raise InvalidInput(
            f"{exc.message} Check that it is complete and has not expired.", field="token"
        ) from None
    sealed = keyring.get().encrypt(token.encode(), seal_context(tenant_id))
    row = _stored(tenant_id, for_update=True)
    replaced = row is not None
    if row is None:
        row = GitHubToken(tenant_id=tenant_id)
    else:
        row.set_at = func.now()
    row.key_id, row.nonce, row.ciphertext = sealed.key_id, sealed.nonce, sealed.ciphertext
    row.last_four = token[-4:]
    row.github_login = login
    row.set_by = actor_id
    try:
        with db.session.begin_nested():
            db.session.add(row)
    except IntegrityError:  # another owner connected the team between our read and our insert
        raise Conflict("GitHub was connected by someone else at the same moment. Reload the page.") from None
    audit.record(
        tenant_id,
        actor_id,
        "github.connected",
        target=login,
        login=login,
        last_four=row.last_four,
        replaced=replaced,
    )
    db.session.flush()
    return login


def status(actor: Actor) -> GitHubConnection | None:
    """The team's connection (None when not connected), with `problem` set if the token cannot be read."""
    VIEW.check(actor)
    tenant_id = actor.tenant_id
    row = db.session.scalar(
        select(GitHubToken).options(joinedload(GitHubToken.setter)).where(GitHubToken.tenant_id == tenant_id)
    )
    if row is None:
        return None
    problem = None
    try:
        _open(row)
    except Conflict as exc:
        problem = exc.message
    return GitHubConnection(
        login=row.github_login,
        last_four=row.last_four,
        set_at=row.set_at,
        set_by=row.setter.name if row.setter else None,
        problem=problem,
    )


def repositories(actor: Actor, *, page: int = 1) -> RepositoryPage:
    """A page of the repositories the team's token can see.

    Raises NotFound when GitHub is not connected, Conflict when the stored token cannot be read,
    and ExternalServiceError when GitHub refuses or cannot be reached.
    """
    VIEW.check(actor)
    tenant_id = actor.tenant_id
    page = max(1, min(page, MAX_PAGE))
    row = _stored(tenant_id)
    if row is None:
        raise NotFound("GitHub is not connected for this team. An owner can connect it on the GitHub page.")
    try:
        items, has_next = github_client().repositories(_open(row), page=page, per_page=PER_PAGE)
    except TokenRejected:
        raise ExternalServiceError(
            "GitHub rejected the token; it may have expired or been revoked. An owner can reconnect GitHub."
        ) from None
    return RepositoryPage(items=items, page=page, has_next=has_next and page < MAX_PAGE)


def disconnect(actor: Actor) -> bool:
    """Delete the team's stored token. Returns False when there was none (nothing to record)."""
    MANAGE.check(actor)
    tenant_id, actor_id = actor.tenant_id, actor.user_id
    row = _stored(tenant_id, for_update=True)
    if row is None:
        return False
    audit.record(
        tenant_id,
        actor_id,
        "github.disconnected",
        target=row.github_login,
        login=row.github_login,
        last_four=row.last_four,
    )
    db.session.delete(row)
    db.session.flush()
    return True
