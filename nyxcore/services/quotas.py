"""Daily allowances that no number of teams can multiply: teams a user creates, invitations sent.

Every mail NyxCore sends goes out from the operator's address, so the instance must not become a
spam relay: a user may create TEAMS_PER_USER_PER_DAY teams, and send INVITATIONS_PER_USER_PER_DAY
invitations across all their teams; the whole instance sends at most
INVITATIONS_PER_INSTANCE_PER_DAY. (The per-team hourly limit in invitations/limits.py stays as well.)

The counters live in the rate-limit storage (RATELIMIT_STORAGE_URI: Redis in production, so every
web process shares them), under RATELIMIT_KEY_PREFIX, counted with the `limits` library in fixed
one-day windows that start with the first use (the key names the allowance, so changing a setting
starts its counters afresh). Flask-Limiter's limiter is one object that every app the process
builds re-initialises (it keeps the last app's storage and the first app's key prefix); these
counters therefore keep a storage per app, built from the same settings. When the storage cannot be reached, they count in this
process's memory for a while (as RATELIMIT_IN_MEMORY_FALLBACK_ENABLED does for Flask-Limiter): a
Redis outage neither answers 500 nor lifts the limits altogether. RATELIMIT_ENABLED switches them
off (the test default).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from flask import current_app
from limits import RateLimitItem, RateLimitItemPerDay
from limits.errors import StorageError
from limits.storage import MemoryStorage, Storage, storage_from_string

from nyxcore.errors import RateLimited

_EXTENSION = "nyxcore_quotas"
RETRY_STORAGE_AFTER_SECONDS = 30.0


@dataclass(frozen=True)
class Quota:
    """A daily allowance: the setting that holds its size, its counter's name, and how a refusal reads."""

    setting: str
    scope: str
    refusal: str  # formatted with limit, left and reset


TEAMS_PER_USER = Quota(
    "TEAMS_PER_USER_PER_DAY",
    "teams-per-user",
    "You may create {limit} teams a day and have {left} left; the count starts again at {reset}.",
)
INVITATIONS_PER_USER = Quota(
    "INVITATIONS_PER_USER_PER_DAY",
    "invitations-per-user",
    "You may send {limit} invitations a day across all your teams and have {left} left; the count "
    "starts again at {reset}. Invite fewer people at once, or try again then.",
)
INVITATIONS_PER_INSTANCE = Quota(
    "INVITATIONS_PER_INSTANCE_PER_DAY",
    "invitations-per-instance",
    "This NyxCore installation sends at most {limit} invitations a day and has {left} left; the "
    "count starts again at {reset}. Invite fewer people at once, or try again then.",
)
# Never refused aloud (its refusal is not shown): `allows` answers False and the caller stays silent.
ACCOUNT_NOTICES_PER_ADDRESS = Quota("ACCOUNT_NOTICES_PER_ADDRESS_PER_DAY", "account-notices-per-address", "")
INSTANCE = "all"  # the key of instance-wide counters


@dataclass
class _Counters:
    """One app's counter storage, with the in-memory fallback and when to try the real one again."""

    primary: Storage
    fallback: MemoryStorage = field(default_factory=MemoryStorage)
    primary_down_until: float = 0.0

    def storage(self) -> Storage:
        return self.fallback if time.monotonic() < self.primary_down_until else self.primary

    def mark_down(self) -> None:
        current_app.logger.warning("Quota storage unreachable; counting in memory for a while.")
        self.primary_down_until = time.monotonic() + RETRY_STORAGE_AFTER_SECONDS


def _counters() -> _Counters:
    extensions = current_app.extensions
    if _EXTENSION not in extensions:  # a race builds two; one wins, neither has counted yet
        uri = current_app.config["RATELIMIT_STORAGE_URI"]
        options: dict[str, float | str | bool] = {"wrap_exceptions": True}
        if uri.startswith(("redis", "rediss")):
            options.update(socket_connect_timeout=2, socket_timeout=2)
        storage = storage_from_string(uri, **options)
        assert isinstance(storage, Storage), "RATELIMIT_STORAGE_URI names an asyncio storage"
        extensions[_EXTENSION] = _Counters(storage)
    counters: _Counters = extensions[_EXTENSION]
    return counters


def _item(quota: Quota) -> RateLimitItem:
    return RateLimitItemPerDay(current_app.config[quota.setting])


def _key(quota: Quota, key: str) -> str:
    return _item(quota).key_for(current_app.config["RATELIMIT_KEY_PREFIX"], quota.scope, key)


def _take(storage: Storage, quota: Quota, key: str, cost: int) -> bool:
    """Add `cost` to the counter; if that goes over the allowance, take it back and say no.

    One atomic INCRBY decides, so concurrent requests in any process cannot both pass the last slot.
    """
    item = _item(quota)
    if storage.incr(_key(quota, key), item.get_expiry(), amount=cost) <= item.amount:
        return True
    _give_back(storage, quota, key, cost)
    return False


def _give_back(storage: Storage, quota: Quota, key: str, cost: int) -> None:
    storage.incr(_key(quota, key), _item(quota).get_expiry(), amount=-cost)


def _refusal(storage: Storage, quota: Quota, key: str, field_name: str) -> RateLimited:
    limit = current_app.config[quota.setting]
    left = max(limit - storage.get(_key(quota, key)), 0)
    reset = datetime.fromtimestamp(storage.get_expiry(_key(quota, key)), UTC).strftime("%Y-%m-%d %H:%M UTC")
    return RateLimited(quota.refusal.format(limit=limit, left=left, reset=reset), field=field_name)


def _spend_in(storage: Storage, charges: Sequence[tuple[Quota, str]], cost: int, field_name: str) -> None:
    taken: list[tuple[Quota, str]] = []
    for quota, key in charges:
        if not _take(storage, quota, key, cost):
            for earlier, earlier_key in taken:
                _give_back(storage, earlier, earlier_key, cost)
            raise _refusal(storage, quota, key, field_name)
        taken.append((quota, key))


def spend(charges: Sequence[tuple[Quota, str]], cost: int, *, field_name: str) -> None:
    """Count `cost` uses against each (quota, key), all or none. Call before writing anything.

    Raises RateLimited (on `field_name`) naming the first allowance with too little left and when
    it starts again. Does nothing when RATELIMIT_ENABLED is off or `cost` is not positive.
    """
    if cost <= 0 or not current_app.config.get("RATELIMIT_ENABLED", True):
        return
    counters = _counters()
    storage = counters.storage()
    try:
        _spend_in(storage, charges, cost, field_name)
    except StorageError:
        counters.mark_down()
        _spend_in(counters.fallback, charges, cost, field_name)


def allows(quota: Quota, key: str) -> bool:
    """Count one use against (quota, key) if the allowance has room; False, counting nothing, if not.

    For what must be skipped silently rather than refused: a refusal would tell the asker something
    (whether an address has an account) that the answer must not.
    """
    try:
        spend([(quota, key)], 1, field_name="")
    except RateLimited:
        return False
    return True
