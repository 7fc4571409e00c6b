"""GET /api/v1/health reports the database and Redis."""

from __future__ import annotations

from nyxcore import create_app
from tests.conftest import test_config


def test_health_is_200_with_database_and_redis(client):
    response = client.get("/api/v1/health")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "database": "ok", "redis": "ok"}


def test_health_is_503_when_the_database_is_unreachable(database):
    config = test_config(database)
    config["SQLALCHEMY_DATABASE_URI"] = "postgresql://postgres@127.0.0.1:1/nowhere"
    config["SQLALCHEMY_ENGINE_OPTIONS"] = {"connect_args": {"connect_timeout": 2}}
    response = create_app(config).test_client().get("/api/v1/health")
    assert response.status_code == 503
    assert response.json["database"] == "unavailable"
    assert response.json["status"] == "unavailable"


def test_health_reports_redis_down_but_stays_200(database):
    config = test_config(database, REDIS_URL="redis://127.0.0.1:1/0")
    response = create_app(config).test_client().get("/api/v1/health")
    assert response.status_code == 200
    assert response.json["redis"] == "unavailable"
