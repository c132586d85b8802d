"""A short run of the real crash test: a child Runtime on the FS store is SIGKILLed under load, three times."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parents[1] / "tools" / "crash_store_fs.py"


def test_no_acknowledged_input_is_lost_across_sigkills() -> None:
    done = subprocess.run(
        [sys.executable, str(TOOL), "--trials", "3", "--workers", "4", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["trials"] == 3 and summary["acks_received"] >= 3
