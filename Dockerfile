# NyxCore: one image for the web server, the Celery worker and beat, and the one-shot migration.
#   web:      gunicorn wsgi:app -c gunicorn.conf.py        (the default command)
#   worker:   celery -A worker worker
#   beat:     celery -A worker beat --schedule /tmp/celerybeat-schedule
#   migrate:  flask --app wsgi db upgrade                   (with MIGRATION_DATABASE_URL, the owner role)
# Every version is pinned: the base image, pip and setuptools here, the whole dependency tree in
# requirements/app.txt. Nothing is fetched when a container starts.

FROM python:3.11.11-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Dependencies first, from the lock alone, so that a code change reuses this layer.
COPY requirements/app.txt requirements/app.txt
RUN pip install --no-cache-dir pip==25.3 setuptools==80.9.0 \
 && pip install --no-cache-dir -r requirements/app.txt

COPY pyproject.toml README.md ./
COPY nyxcore nyxcore
# --no-build-isolation: build with the pinned setuptools above instead of fetching one.
RUN pip install --no-cache-dir --no-deps --no-build-isolation .


FROM python:3.11.11-slim-bookworm AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NYXCORE_ENV=production

RUN groupadd --system --gid 10001 nyxcore \
 && useradd --system --uid 10001 --gid nyxcore --home-dir /app --no-create-home \
      --shell /usr/sbin/nologin nyxcore

COPY --from=build /opt/venv /opt/venv

WORKDIR /app
COPY wsgi.py worker.py gunicorn.conf.py ./
COPY migrations migrations
# nyxcore.MIGRATIONS_DIR is the folder next to the package; installed, that is site-packages/.
# Point it here so that `flask --app wsgi db upgrade` works as documented, without --directory.
RUN ln -s /app/migrations /opt/venv/lib/python3.11/site-packages/migrations

USER 10001:10001
EXPOSE 8000

# The image has no curl; the standard library is enough. 200 means the database answers. (Port 8000:
# change it here too if you set GUNICORN_BIND.)
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/api/v1/health', timeout=4).status != 200)"]

CMD ["gunicorn", "wsgi:app", "-c", "gunicorn.conf.py"]
