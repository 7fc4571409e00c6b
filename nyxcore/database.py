"""Engine setup per dialect: the tenant context on PostgreSQL, sane transactions on SQLite."""

from __future__ import annotations

import time
import uuid
import weakref
from typing import Any

import psycopg2.extensions
from sqlalchemy import TypeDecorator, Uuid, event, exc
from sqlalchemy.engine import Connection, Dialect, Engine

from nyxcore import tenancy

_CHECKED_IN_AT = "nyxcore_checked_in_at"


def configure_engine(engine: Engine, *, ping_idle_seconds: float = 10.0) -> None:
    """Install the tenant-context events and the idle ping (PostgreSQL) or the SQLite transaction fixes."""
    if engine.dialect.name == "postgresql":
        tenancy.install_engine_events(engine)
        install_idle_ping(engine, ping_idle_seconds)
        if not event.contains(engine, "connect", _read_uuids_faster):
            event.listen(engine, "connect", _read_uuids_faster)
    elif engine.dialect.name == "sqlite" and not event.contains(engine, "connect", _sqlite_connect):
        # pysqlite's own transaction handling breaks SAVEPOINT; let SQLAlchemy emit BEGIN itself.
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)


def _uuid_from_text(value: str | None, cursor: Any) -> uuid.UUID | None:
    """The `uuid.UUID` that PostgreSQL's text form `value` names, made as `UUID.__init__` makes it (the
    same two slots), without its parsing of the forms PostgreSQL never sends (braces, `urn:uuid:`):
    half the cost of psycopg2's `register_uuid` caster, for the hundred ids a team page reads."""
    if value is None:
        return None
    made = _new(_UUID)
    _set(made, "int", int(value.replace("-", ""), 16))
    _set(made, "is_safe", uuid.SafeUUID.unknown)
    return made


_new, _set, _UUID = object.__new__, object.__setattr__, uuid.UUID
_UUID_TYPE = psycopg2.extensions.new_type((2950,), "UUID", _uuid_from_text)  # 2950: uuid's type OID
_UUID_ARRAY_TYPE = psycopg2.extensions.new_array_type((2951,), "UUID[]", _UUID_TYPE)


def _read_uuids_faster(dbapi_connection: Any, connection_record: Any) -> None:
    # After the dialect's own connect hook (which registers psycopg2's caster): this one replaces it.
    psycopg2.extensions.register_type(_UUID_TYPE, dbapi_connection)
    psycopg2.extensions.register_type(_UUID_ARRAY_TYPE, dbapi_connection)


def _sqlite_connect(dbapi_connection: Any, connection_record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN")


def install_idle_ping(engine: Engine, idle_seconds: float) -> None:
    """Check a pooled connection with a ping before use only if it sat idle longer than `idle_seconds`.

    A pre-ping on every checkout is a round trip on every request. A connection handed back a moment
    ago was alive a moment ago; one that waited longer (across a database restart, a firewall's idle
    cut) is pinged, and a dead one is replaced before the request uses it: DisconnectionError makes
    the pool discard it and connect again.
    """
    if engine in _PINGING:
        return
    _PINGING.add(engine)
    ping = IdlePing(engine.dialect, idle_seconds)
    event.listen(engine, "checkin", ping.checkin)
    event.listen(engine, "checkout", ping.checkout)


_PINGING: weakref.WeakSet[Engine] = weakref.WeakSet()


class IdlePing:
    """The pool events of install_idle_ping: note when a connection comes back, ping it if it waited long."""

    def __init__(self, dialect: Dialect, idle_seconds: float) -> None:
        self.dialect = dialect
        self.idle_seconds = idle_seconds

    def checkin(self, dbapi_connection: Any, record: Any) -> None:
        record.info[_CHECKED_IN_AT] = time.monotonic()

    def checkout(self, dbapi_connection: Any, record: Any, proxy: Any) -> None:
        checked_in_at = record.info.get(_CHECKED_IN_AT)
        if checked_in_at is None or time.monotonic() - checked_in_at <= self.idle_seconds:
            return  # just connected, or back in the pool only a moment ago
        try:
            alive = self.dialect.do_ping(dbapi_connection)
        except self.dialect.loaded_dbapi.Error as error:
            if not self.dialect.is_disconnect(error, dbapi_connection, None):
                raise
            alive = False
        if not alive:
            raise exc.DisconnectionError("the pooled connection no longer answers")


class IdText(TypeDecorator[str]):
    """A UUID column read as the text the pages print ("6ba7b810-9dad-11d1-80b4-00c04fd430c8"): what a list's
    rows carry where their ids only go into URLs. PostgreSQL's statements cast such ids to text in
    the statement (no `uuid.UUID` made and printed again per row); SQLite's (`make run`) use this."""

    impl = Uuid
    cache_ok = True

    def process_result_value(self, value: uuid.UUID | None, dialect: Dialect) -> str | None:
        return None if value is None else str(value)
