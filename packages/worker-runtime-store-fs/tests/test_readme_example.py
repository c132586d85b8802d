"""The README's example runs as written, twice, and the second run finds what the first stored."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]


def test_the_example_is_in_the_readme_and_persists_across_runs(tmp_path: Path) -> None:
    example = (PACKAGE / "examples" / "persist.py").read_text()
    blocks = re.findall(r"```python\n(.*?)```", (PACKAGE / "README.md").read_text(), flags=re.S)
    assert example.split('"""', 2)[2].strip() in [b.strip() for b in blocks]
    outputs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, str(PACKAGE / "examples" / "persist.py"), str(tmp_path / "store")],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout.strip())
    first, second = outputs
    assert first.endswith("duplicate=False, 2 entries")
    assert second.endswith("duplicate=True, 2 entries")
    assert first.split(":")[0] == second.split(":")[0]  # the same runtime id
