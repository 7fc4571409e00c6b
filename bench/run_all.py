"""Run every benchmark in turn (`make bench`), each as its own process, and sum up how they ended.

    .venv/bin/python bench/run_all.py [name ...]     # e.g. `load` to run bench/load.py only

Runs rls_overhead.py, load.py, instructions.py, size.py and email_pipeline.py (when it exists) with their
default settings; their figures go to the terminal (record them in RESULTS.md). load.py needs wrk and
instructions.py valgrind: when one is missing, its benchmark is skipped with the command that installs
it, and the run ends with status 1.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
BENCHMARKS = ("rls_overhead", "load", "instructions", "size", "email_pipeline")
NEEDS = {"load": "wrk", "instructions": "valgrind"}
INSTALL = {
    "wrk": "sudo apt-get install wrk   (Debian/Ubuntu package `wrk`)",
    "valgrind": "sudo apt-get install valgrind   (Debian/Ubuntu package `valgrind`)",
}


def main(argv: list[str]) -> int:
    wanted = argv or list(BENCHMARKS)
    unknown = sorted(set(wanted) - set(BENCHMARKS))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
        return 2
    outcomes: list[tuple[str, str]] = []
    for name in BENCHMARKS:
        script = BENCH / f"{name}.py"
        if name not in wanted:
            continue
        if not script.exists():
            if argv:  # asked for by name
                outcomes.append((name, "missing"))
            continue
        tool = NEEDS.get(name)
        if tool and shutil.which(tool) is None:
            print(f"\n=== {name}: skipped, {tool} is not installed. Install it with:\n  {INSTALL[tool]}\n")
            outcomes.append((name, f"skipped: {tool} missing"))
            continue
        print(f"\n=== {name} ({script.relative_to(BENCH.parent)})", flush=True)
        started = time.monotonic()
        status = subprocess.run([sys.executable, str(script)], cwd=BENCH.parent, check=False).returncode
        minutes = (time.monotonic() - started) / 60
        outcomes.append((name, f"exit {status} after {minutes:.1f} min"))
    print("\n=== summary")
    for name, outcome in outcomes:
        print(f"  {name:<15} {outcome}")
    failed = [name for name, outcome in outcomes if not outcome.startswith("exit 0 ")]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
