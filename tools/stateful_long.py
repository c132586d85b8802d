"""The two hypothesis state machines of the suite, run with many more examples than the suite gives them.

    hatch run stateful-long                          # 2,000 examples per backend, both machines
    hatch run stateful-long --examples 10000 --steps 20
    hatch run stateful-long --only fs --backend trio

The machines are ``packages/worker-runtime-core/tests/test_runtime_stateful.py`` (a store that holds and fails
writes on command) and ``tests/test_stateful_fs.py`` (the FS store through restarts, kills and power cuts); the
suite runs 200 examples of 10 steps per backend of each. This runs the same tests through pytest with
``WORKER_RUNTIME_STATEFUL_EXAMPLES`` and ``WORKER_RUNTIME_STATEFUL_STEPS`` set, without hypothesis's example
database (each run searches afresh), and exits with pytest's status: a failure prints the shrunk steps.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MACHINES = {
    "memory": "packages/worker-runtime-core/tests/test_runtime_stateful.py",
    "fs": "tests/test_stateful_fs.py",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=2000, help="examples per backend (default 2000)")
    parser.add_argument("--steps", type=int, default=10, help="most steps per example (default 10)")
    parser.add_argument("--only", choices=sorted(MACHINES), help="run one machine only")
    parser.add_argument("--backend", choices=["asyncio", "trio"], help="run under one backend only")
    args = parser.parse_args()
    if args.examples < 1 or args.steps < 1:
        parser.error("--examples and --steps must be at least 1")
    paths = [MACHINES[args.only]] if args.only else list(MACHINES.values())
    command = [sys.executable, "-m", "pytest", *paths, "-q", "-p", "no:cacheprovider", "--durations=0"]
    if args.backend:
        command += ["-k", args.backend]
    env = dict(
        os.environ,
        WORKER_RUNTIME_STATEFUL_EXAMPLES=str(args.examples),
        WORKER_RUNTIME_STATEFUL_STEPS=str(args.steps),
    )
    print(f"{args.examples} examples of at most {args.steps} steps per backend: {' '.join(paths)}", flush=True)
    return subprocess.run(command, cwd=ROOT, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
