"""The JSON API: health for load balancers and the proxy."""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Blueprint, current_app, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from nyxcore.extensions import db

bp = Blueprint("api", __name__, url_prefix="/api/v1")
log = logging.getLogger("nyxcore.health")


@bp.get("/health")
def health() -> tuple[Any, int]:
    """200 when the database answers (Redis reported, not required), 503 when it does not."""
    database = "ok"
    try:
        db.session.execute(text("SELECT 1"))
        db.session.rollback()
    except SQLAlchemyError as exc:
        db.session.rollback()
        log.warning("health: database unavailable (%s)", type(exc).__name__)
        database = "unavailable"
    redis_state = "not configured"
    redis_url = current_app.config["REDIS_URL"]
    if redis_url:
        try:
            client = redis.Redis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=1)
            client.ping()
            client.close()
            redis_state = "ok"
        except redis.RedisError:
            redis_state = "unavailable"
    ok = database == "ok"
    body = {"status": "ok" if ok else "unavailable", "database": database, "redis": redis_state}
    return jsonify(body), 200 if ok else 503
