"""The Docker image in tests: the engine, a local stand-in for the pinned base image, the build, containers.

No image registry is reachable where the tests run, so `FROM python:3.11.11-slim-bookworm` cannot be
pulled. `ensure_base_image()` makes a stand-in under that name: `debootstrap --variant=minbase
bookworm` from the host's Debian mirror, plus Debian's python3.11 arranged where the official image
has it (/usr/local/bin/python, python3, pip ...), imported with `docker import`. The Dockerfile
then builds unchanged. It is made once per machine and reused: its label carries a hash of the
recipe, and a different recipe (or host CA bundle, or pip index) makes a new one. If the image of
that name exists without the label, it is the real one (pulled), and is used as it is.

Inside a build or a container run with `--network host`, pip reaches the package index as the host
does, through a TLS proxy whose CA only the host trusts: the stand-in carries the host's CA bundle,
sets PIP_CERT to it, and its /etc/pip.conf names the index the host's pip uses (when it is not PyPI).

    base = ensure_base_image()      # slow the first time on a machine (about 2 minutes)
    built = build_image(ROOT)       # docker build --network host: the image id, its size
    with Containers() as containers:   # removed together when the block ends
        web, _ = containers.run("web", built.image, command, options=[...], env={...})
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.live import ROOT, LiveServerError

DOCKER = shutil.which("docker") or "/usr/local/bin/docker"
DOCKER_COMPOSE = shutil.which("docker-compose") or "/usr/bin/docker-compose"
DEBOOTSTRAP = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
# The legacy builder: the engine is Debian's docker.io, and the client has no buildx plugin.
DOCKER_ENV = {**os.environ, "DOCKER_BUILDKIT": "0"}

HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
STAND_IN_LABEL = "org.nyxcore.test.stand-in"
SUITE = "bookworm"
# Debian's Python 3.11 (3.11.2 in bookworm) with venv and pip, as the official image has them.
PACKAGES = ("python3.11", "python3.11-venv", "python3-pip", "ca-certificates")
# Where the official image has its interpreter and pip, and what the Debian packages install.
OFFICIAL_PATHS = {
    "usr/local/bin/python": "/usr/bin/python3.11",
    "usr/local/bin/python3": "/usr/bin/python3.11",
    "usr/local/bin/python3.11": "/usr/bin/python3.11",
    "usr/local/bin/pip": "/usr/bin/pip3",
    "usr/local/bin/pip3": "/usr/bin/pip3",
    "usr/local/bin/pip3.11": "/usr/bin/pip3",
}
# The official image's settings (its PATH, LANG and CMD), and the proxy's CA for pip.
IMAGE_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    f"ENV PIP_CERT={HOST_CA_BUNDLE}",
    'CMD ["python3"]',
)
LOCK = Path(tempfile.gettempdir()) / "nyxcore-test-base-image.lock"


def docker(*args: str, timeout: float = 120, check: bool = True, input: bytes | None = None) -> str:
    """Run `docker ARGS`; its stdout. A failure raises with the command's output."""
    result = subprocess.run(
        [DOCKER, *args], env=DOCKER_ENV, input=input, capture_output=True, timeout=timeout
    )
    out, err = result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace")
    if check and result.returncode != 0:
        raise LiveServerError(
            f"docker {' '.join(args[:3])} ... failed ({result.returncode}):\n{out}\n{err}"[-6000:]
        )
    return out


def engine_problem() -> str | None:
    """Why the Docker engine cannot be used here, or None when `docker info` answers."""
    if not os.path.exists(DOCKER):
        return "the docker client is not installed"
    try:
        result = subprocess.run([DOCKER, "info"], env=DOCKER_ENV, capture_output=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 30 s"
    if result.returncode != 0:
        said = result.stderr.decode(errors="replace").strip().splitlines()
        return said[-1] if said else "`docker info` failed"
    return None


# ---------------------------------------------------------------------------------------------------
# The base image stand-in.


def base_image_name(dockerfile: Path = ROOT / "Dockerfile") -> str:
    """The one image every stage of the Dockerfile starts FROM."""
    images = set(re.findall(r"^FROM\s+(\S+)", dockerfile.read_text(), re.MULTILINE))
    assert len(images) == 1, f"expected one base image in {dockerfile}, found {images}"
    return images.pop()


def debian_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The host's Debian mirror for `SUITE` (deb822 .sources first, then one-line sources.list)."""
    for path in sorted((sources / "sources.list.d").glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = dict(
                (line.split(":", 1)[0].strip(), line.split(":", 1)[1].strip())
                for line in stanza.splitlines()
                if ":" in line and not line.startswith(("#", " "))
            )
            if SUITE in fields.get("Suites", "").split() and "main" in fields.get("Components", ""):
                return fields["URIs"].split()[0]
    for path in [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*.list"))]:
        if path.exists():
            for line in path.read_text().splitlines():
                match = re.match(rf"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+{SUITE}\s", line)
                if match:
                    return match.group(1)
    return "http://deb.debian.org/debian"


def host_pip_index() -> dict[str, str]:
    """The index settings of the host's pip (`pip config list`), those a container can reach too.

    file:// indexes live on the host's disk only; with none left, pip in the build uses PyPI, as the
    host does (through the proxy whose CA the stand-in carries).
    """
    result = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60
    )
    found: dict[str, str] = {}
    for line in result.stdout.splitlines():
        match = re.match(r"^[^.]*\.(index-url|extra-index-url|trusted-host)='(.*)'$", line)
        if match:
            kept = [v for v in match.group(2).split() if not v.startswith("file:")]
            if kept:
                found[match.group(1)] = " ".join(kept)
    for key in ("index-url", "extra-index-url", "trusted-host"):
        value = os.environ.get("PIP_" + key.upper().replace("-", "_"), "")
        kept = [v for v in value.split() if not v.startswith("file:")]
        if kept:
            found[key] = " ".join(kept)
    return found


@dataclass(frozen=True)
class Recipe:
    name: str
    mirror: str
    pip_config: str
    ca_bundle: bytes

    @property
    def key(self) -> str:
        """A hash of everything the stand-in is made from (this module's recipe included)."""
        digest = hashlib.sha256()
        for part in (
            self.name,
            self.mirror,
            SUITE,
            " ".join(PACKAGES),
            json.dumps(OFFICIAL_PATHS),
            "\n".join(IMAGE_CHANGES),
            self.pip_config,
        ):
            digest.update(part.encode() + b"\0")
        digest.update(self.ca_bundle)
        return digest.hexdigest()[:16]


def recipe() -> Recipe:
    index = host_pip_index()
    pip_config = "[global]\n" + "".join(
        f"{k} = {v}\n" for k, v in {"cert": str(HOST_CA_BUNDLE), **index}.items()
    )
    return Recipe(base_image_name(), debian_mirror(), pip_config, HOST_CA_BUNDLE.read_bytes())


def image_labels(name: str) -> dict[str, str] | None:
    """The labels of the local image `name` ({} if it has none), or None when there is no such image."""
    out = docker("image", "inspect", "--format", "{{json .Config.Labels}}", name, check=False).strip()
    if not out:
        return None
    return json.loads(out) or {}


@dataclass(frozen=True)
class BaseImage:
    name: str
    stand_in: bool  # False: the real, pulled image
    made_now: bool
    seconds: float


def ensure_base_image() -> BaseImage:
    """The Dockerfile's base image: the real one if present, else the stand-in (made if missing)."""
    started = time.monotonic()
    wanted = recipe()
    LOCK.touch(exist_ok=True)
    with open(LOCK) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run on this machine may be making it
        labels = image_labels(wanted.name)
        if labels is not None and STAND_IN_LABEL not in labels:
            return BaseImage(wanted.name, stand_in=False, made_now=False, seconds=time.monotonic() - started)
        if labels is not None and labels[STAND_IN_LABEL] == wanted.key:
            return BaseImage(wanted.name, stand_in=True, made_now=False, seconds=time.monotonic() - started)
        make_stand_in(wanted)
    return BaseImage(wanted.name, stand_in=True, made_now=True, seconds=time.monotonic() - started)


def make_stand_in(wanted: Recipe) -> None:
    root = Path(tempfile.mkdtemp(prefix="nyxcore-base-", dir="/var/tmp"))
    try:
        result = subprocess.run(
            [
                DEBOOTSTRAP,
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                SUITE,
                str(root),
                wanted.mirror,
            ],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if result.returncode != 0:
            raise LiveServerError(f"debootstrap failed:\n{(result.stdout + result.stderr)[-4000:]}")
        arrange_like_the_official_image(root, wanted)
        archive = subprocess.run(
            [
                "tar",
                "-C",
                str(root),
                "--exclude=./dev/*",
                "--exclude=./proc/*",
                "--exclude=./sys/*",
                "-c",
                ".",
            ],
            capture_output=True,
            check=True,
            timeout=300,
        ).stdout
        changes = [
            arg
            for change in (*IMAGE_CHANGES, f"LABEL {STAND_IN_LABEL}={wanted.key}")
            for arg in ("--change", change)
        ]
        docker("import", *changes, "-", wanted.name, input=archive, timeout=300)
    finally:
        unmount_under(root)
        shutil.rmtree(root, ignore_errors=True)


def arrange_like_the_official_image(root: Path, wanted: Recipe) -> None:
    """The official image's paths, the host's CA bundle and pip index; no package caches."""
    for link, target in OFFICIAL_PATHS.items():
        (root / link).parent.mkdir(parents=True, exist_ok=True)
        (root / link).unlink(missing_ok=True)
        (root / link).symlink_to(target)
    # The official image's pip installs wherever it is told (Debian's refuses outside a venv).
    for marker in (root / "usr/lib").glob("python3*/EXTERNALLY-MANAGED"):
        marker.unlink()
    shutil.copyfile(HOST_CA_BUNDLE, root / str(HOST_CA_BUNDLE).lstrip("/"))
    (root / "etc/pip.conf").write_text(wanted.pip_config)
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for item in (root / cache).glob("*"):
            if item.is_file():
                item.unlink()


def unmount_under(root: Path) -> None:
    """Unmount what a failed debootstrap left mounted under `root` (proc, sys), deepest first."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(f"{root}/")), reverse=True):
        subprocess.run(["umount", "-l", mount], check=False, timeout=30)


# ---------------------------------------------------------------------------------------------------
# The build.


@dataclass(frozen=True)
class BuiltImage:
    image: str  # the image id (sha256:...), safe when several runs build at once
    seconds: float
    size_bytes: int
    log: str


def build_image(context: Path = ROOT, tag: str = "nyxcore:test") -> BuiltImage:
    """`docker build --network host` of the project's Dockerfile, unchanged."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as scratch:
        iidfile = Path(scratch) / "iid"
        log = docker(
            "build", "--network", "host", "--iidfile", str(iidfile), "--tag", tag, str(context), timeout=900
        )
        image = iidfile.read_text().strip()
    size = int(docker("image", "inspect", "--format", "{{.Size}}", image).strip())
    return BuiltImage(image=image, seconds=time.monotonic() - started, size_bytes=size, log=log)


def image_config(image: str) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(docker("image", "inspect", "--format", "{{json .Config}}", image))
    return config


# ---------------------------------------------------------------------------------------------------
# Containers a test starts, stopped and removed together (by the ids it got back, never by name).


@dataclass
class Container:
    role: str
    id: str

    def logs(self) -> str:
        """What the container wrote to stdout and stderr."""
        result = subprocess.run(
            [DOCKER, "logs", self.id], env=DOCKER_ENV, capture_output=True, text=True, timeout=30
        )
        return result.stdout + result.stderr

    def inspect(self) -> dict[str, Any]:
        """`docker inspect`: the container as docker ran it (Config, HostConfig, State ...)."""
        found: dict[str, Any] = json.loads(docker("inspect", "--format", "{{json .}}", self.id))
        return found

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.inspect()["State"]
        return state

    def exec(self, *command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [DOCKER, "exec", self.id, *command],
            env=DOCKER_ENV,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def check_alive(self) -> None:
        """Raise LiveServerError, with the log's tail, if the container has stopped (as Process does)."""
        state = self.state()
        if not state["Running"]:
            raise LiveServerError(
                f"container {self.role} exited with {state['ExitCode']}:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.logs().splitlines()[-lines:])

    @property
    def name(self) -> str:
        """As a Process is named (tests/live.py wait_until shows it)."""
        return self.role


@dataclass
class Containers:
    """`docker run`s with `--network host` and the options compose gives the service."""

    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    started: list[Container] = field(default_factory=list)

    def __enter__(self) -> Containers:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.remove_all()

    def run(
        self,
        role: str,
        image: str,
        command: Sequence[str],
        *,
        options: Sequence[str] = (),
        env: Mapping[str, str] = {},
        detach: bool = True,
        timeout: float = 300,
    ) -> tuple[Container, str]:
        """Start `command` in a container of `image` (detached: returns at once; else: once it exits).

        Returns the container and, for a foreground run, its output (the container is kept until the
        block ends, so its state and logs stay readable).
        """
        name = f"nyxcore-test-{role}-{self.run_id}"
        with tempfile.NamedTemporaryFile("w", suffix=".env", delete=False) as env_file:
            env_file.write("".join(f"{key}={value}\n" for key, value in env.items()))
        try:
            args = ["run", "--name", name, "--network", "host", "--env-file", env_file.name, *options]
            result = subprocess.run(
                [DOCKER, *args, *(["--detach"] if detach else []), image, *command],
                env=DOCKER_ENV,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        finally:
            os.unlink(env_file.name)
        container_id = docker("inspect", "--format", "{{.Id}}", name, check=False).strip()
        if container_id:
            self.started.append(Container(role, container_id))
        if result.returncode != 0 and (detach or not container_id):
            raise LiveServerError(
                f"docker run {role} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
            )
        return Container(role, container_id), result.stdout + result.stderr

    def remove_all(self) -> None:
        """Stop every container started here (SIGTERM, SIGKILL after 10 s, all at once), then remove them."""
        ids = [container.id for container in self.started]
        self.started.clear()
        if ids:
            with contextlib.suppress(subprocess.TimeoutExpired):
                docker("stop", "--time", "10", *ids, check=False, timeout=60)
                docker("rm", "--force", *ids, check=False, timeout=60)


@contextlib.contextmanager
def timed(timings: dict[str, float], name: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        timings[name] = round(time.monotonic() - started, 1)
