"""Gunicorn settings for `gunicorn wsgi:app -c gunicorn.conf.py`, read from the environment.

GUNICORN_BIND (default 127.0.0.1:8000), GUNICORN_WORKERS (2), GUNICORN_THREADS (4), GUNICORN_TIMEOUT
(30 s), GUNICORN_GRACEFUL_TIMEOUT (30 s), GUNICORN_KEEPALIVE (5 s, behind nginx), GUNICORN_MAX_REQUESTS
(0: never recycle workers). The app's own settings are in nyxcore/config.py.
"""

import os

from nyxcore.serving import RedactingLogger, refuse_unsafe_database_role


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    return int(raw) if raw else default


# The loopback by default: nginx on the same host is the public face. Compose binds 0.0.0.0 on its
# own network (docker-compose.yml), where only nginx is trusted to set X-Forwarded-*.
bind = [os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")]
workers = _int("GUNICORN_WORKERS", 2)
threads = _int("GUNICORN_THREADS", 4)
worker_class = "gthread"
timeout = _int("GUNICORN_TIMEOUT", 30)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
keepalive = _int("GUNICORN_KEEPALIVE", 5)
max_requests = _int("GUNICORN_MAX_REQUESTS", 0)
max_requests_jitter = max_requests // 10
# Heartbeat files on tmpfs: a container's overlay /tmp can stall a worker's heartbeat.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108

# The app's TrustedProxyFix (TRUSTED_PROXIES) is the one place that trusts X-Forwarded-*; gunicorn
# trusts no peer, so the two can never disagree about the scheme or the client address.
forwarded_allow_ips = ""
# No runtime control socket (gunicornc): it would be created under $HOME, shared between instances.
control_socket_disable = True

accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")
# Every atom is passed through nyxcore.logs.redact by RedactingLogger: no magic-link token in the log.
logger_class = RedactingLogger
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(f)s" "%(a)s" %({x-request-id}i)s'

# Production refuses an app database role that can bypass row-level security, checked once here.
on_starting = refuse_unsafe_database_role
