"""The README's example runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]


def test_readme_example_is_the_shipped_example_and_prints_the_transcript() -> None:
    readme = (PACKAGE / "README.md").read_text()
    example = (PACKAGE / "examples" / "hello.py").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert example.split('"""', 2)[2].strip() in [b.strip() for b in blocks]
    done = subprocess.run([sys.executable, str(PACKAGE / "examples" / "hello.py")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["run run-3: completed", "0 user: hello", "1 assistant: hello"]
