"""Instructions per request under callgrind: the fixed-cost and page ratios without the host's noise (issue 15).

    .venv/bin/python bench/instructions.py [--requests 100]

The machines these benchmarks run on are virtual and shared: the same CPU-bound loop takes from
170 to 270 ms from one second to the next, so CPU-time ratios of pages measured one after the other
(bench/load.py) move by 20-40% between runs. Instructions executed do not: callgrind counts them,
the same for the same code and inputs whatever else the host is doing.

It seeds the database as bench/load.py does and starts the same two gunicorn servers (the app with
the bench routes, and the bare Flask app; the project's gunicorn.conf.py, one sync worker each) under
`valgrind --tool=callgrind`. For each page it sends `--requests` unmeasured GETs, zeroes the worker's
counters, sends `--requests` more over one keep-alive connection (signed-in pages with the owner of
team 0's cookie), dumps the counters and divides. Only the gunicorn worker is counted: PostgreSQL's
share of a page (bench/load.py prints it) is not in these figures, so the page ratios here are the
Python side's alone. /bench/hello against the bare app has no database share: its ratio is the
whole of issue 15's fixed-cost target (<= 1.2).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, Browser, child_pids, free_port, throwaway_database
from load import (
    APP,
    BARE_APP,
    HELLO_TARGET,
    pages_for,
    parse_args,
    production_environment,
    seed,
    signed_in_cookie,
)


def start(app: str, environment: dict[str, str], out: Path) -> tuple[subprocess.Popen[bytes], int]:
    """`app` under one gunicorn sync worker, the whole process tree under callgrind."""
    port = free_port()
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg.%p", "--trace-children=yes"]
    command += [sys.executable, "-m", "gunicorn", "--config", str(ROOT / "gunicorn.conf.py")]
    command += ["--bind", f"127.0.0.1:{port}", "--workers", "1", "--worker-class", "sync", "--threads", "1"]
    command += ["--timeout", "600", "--log-level", "warning", app]
    log = open(out / f"gunicorn-{app.split(':')[0]}.log", "wb")  # noqa: SIM115 (closed with the process)
    process = subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, **environment}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    return process, port


def wait_ready(port: int, path: str, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if Browser(port).request("GET", path)[0] == 200:
                return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"the server on port {port} never answered {path}")


def instructions_per_request(process: subprocess.Popen[bytes], port: int, path: str, cookie: str,
                             requests: int, out: Path) -> float:  # fmt: skip
    """Instructions the worker executes per GET `path`, after `requests` unmeasured ones."""
    browser = Browser(port, headers={"Cookie": cookie} if cookie else None)
    try:
        for _ in range(requests):
            assert browser.request("GET", path)[0] == 200, path
        (worker,) = child_pids(process.pid)
        subprocess.run(["callgrind_control", "-z", str(worker)], check=True, capture_output=True)
        for _ in range(requests):
            browser.request("GET", path)
        before = set(out.glob(f"cg.{worker}*"))
        subprocess.run(["callgrind_control", "-d", str(worker)], check=True, capture_output=True)
    finally:
        browser.close()
    # The dump is `cg.<pid>.<n>`; the forked worker's own `cg.<pid>` appears with it, still empty.
    totals = [_total(dump) for dump in set(out.glob(f"cg.{worker}*")) - before]
    if not any(totals):
        raise RuntimeError(f"callgrind wrote no totals for worker {worker}")
    return sum(totals) / requests


def _total(dump: Path) -> int:
    for line in dump.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args(argv)
    load_args = parse_args([])  # bench/load.py's data: 50 teams x 50 members, 60 notes, 5 invitations
    token = secrets.token_urlsafe(32)
    print("Instructions per request under callgrind (issue 15)", flush=True)
    with throwaway_database("nyxcore_instr") as database, tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        seed(database, load_args, hashlib.sha256(token.encode()).hexdigest())
        environment = production_environment(database, secrets.token_hex(4))
        servers = {"app": start(APP, environment, out), "bare": start(BARE_APP, environment, out)}
        try:
            wait_ready(servers["app"][1], "/api/v1/health")
            wait_ready(servers["bare"][1], "/bench/hello")
            cookie = signed_in_cookie(servers["app"][1])
            counts = {}
            for page in pages_for(load_args, token):
                process, port = servers[page.server]
                counts[page.name] = instructions_per_request(
                    process, port, page.path, cookie if page.signed_in else "", args.requests, out
                )
                print(
                    f"  {page.name:10} {page.label:26} {counts[page.name]:>12,.0f} instructions per request"
                )
        finally:
            for process, _ in servers.values():
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=60)
    for name in ("team", "notes", "invite"):
        print(
            f"reference / {name}: {counts['reference'] / counts[name]:.3f} (Python side only; target 0.6 counts PostgreSQL too)"
        )
    # Information, no target: what every signed-in page pays before its own content (the session
    # load, the Actor, the layout), against the reference and as a share of each signed-in page.
    for name in ("team", "notes"):
        print(f"layout / {name}: {counts['layout'] / counts[name]:.3f} (the signed-in fixed cost's share of the page)")
    print(f"layout / reference: {counts['layout'] / counts['reference']:.3f}")
    # Information, no target: the reference's work on a signed-in page against the pages that pay the same
    # signed-in fixed cost.
    for name in ("team", "notes"):
        print(f"signed-in reference / {name}: {counts['ref-in'] / counts[name]:.3f}")
    fixed = counts["hello"] / counts["bare"]
    verdict = "PASS" if fixed <= HELLO_TARGET else "BELOW TARGET"
    print(
        f"{verdict}: /bench/hello {fixed:.3f} x the bare Flask hello's instructions (target <= {HELLO_TARGET})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
