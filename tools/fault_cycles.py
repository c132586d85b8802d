"""The real-process fault tests of tests/test_process_faults.py, longer: more SIGKILL cycles, more rounds.

    hatch run fault-cycles                          # 20 SIGKILL cycles, 3 rounds of the full disk and of EIO
    hatch run fault-cycles --kill-cycles 100 --rounds 10 --seed 7
    hatch run fault-cycles --rounds 0 --json

Each round starts `worker-runtime-http serve` on 127.0.0.1 and checks what the suite checks: a 2 MiB tmpfs filled
while input arrives (writes 503, reads go on, nothing acknowledged lost, /readyz 503 and service back by itself
once space returns), one fsync failed with EIO through strace (writes refused with an unknown outcome until a
restart, no id reused), and SIGKILL under concurrent input on one store, cycle after cycle (every 202 present
once after the restart, every run ended once, the running ones `interrupted`). Needs root (mounts) and strace.
Every check runs, also those the suite marks as waiting for other work; the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import pytest
import test_process_faults as faults

CHECKS: dict[str, list[Callable[[Any], None]]] = {
    "full_disk": [
        faults.test_on_a_full_disk_writes_answer_503_reads_go_on_and_no_acknowledged_input_is_lost,
        faults.test_on_a_full_disk_readyz_is_503_and_service_resumes_by_itself_once_space_returns,
    ],
    "failed_fsync": [
        faults.test_after_a_failed_fsync_writes_are_refused_until_a_restart_and_no_id_is_reused,
        faults.test_after_a_failed_fsync_the_503s_say_the_outcome_is_unknown_and_readyz_is_503,
    ],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kill-cycles", type=int, default=20, help="SIGKILL cycles on one store (default 20)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the full disk and of EIO (default 3)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print one JSON summary line")
    args = parser.parse_args()
    try:
        return run(args)
    except pytest.skip.Exception as exc:  # a missing tool or privilege (see tests/fault_helpers.py)
        print(f"fault-cycles: cannot run: {exc.msg}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    failures: list[str] = []
    summary: dict[str, Any] = {"seed": seed}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for n in range(args.rounds):
            for name, run in (("full_disk", faults.run_full_disk), ("failed_fsync", faults.run_failed_fsync)):
                where = root / f"{name}-{n}"
                where.mkdir()
                seen = run(where)
                for check in CHECKS[name]:
                    try:
                        check(seen)
                    except AssertionError:
                        failures.append(f"round {n + 1}: {check.__name__}: {traceback.format_exc(limit=-1).strip()}")
                if not args.json:
                    print(f"round {n + 1}: {name} done", flush=True)
        if args.kill_cycles:
            where = root / "kill"
            where.mkdir()
            summary["kill"] = faults.kill_cycles(where, args.kill_cycles, random.Random(seed))
    summary["rounds"] = args.rounds
    summary["failures"] = len(failures)
    for failure in failures:
        print(failure, file=sys.stderr)
    print(json.dumps(summary) if args.json else f"done: {summary}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
