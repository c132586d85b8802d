"""Audit of the FS store's fsyncs: remove each one in turn and see whether a test notices.

    hatch run audit-fsync                       # every call site, 4 at a time
    hatch run audit-fsync --list                # only list the call sites
    hatch run audit-fsync --jobs 1 --json

A call site is a call of ``fileops.fsync``, ``fileops.fsync_dir`` or ``fileops.sync`` in
``packages/worker-runtime-store-fs/src`` (every durable operation of the store goes through `_fileops`). For each
one, a temporary copy of the package's source gets that one call replaced by ``None`` (its arguments are not
evaluated), and the store tests run against the copy (``PYTHONPATH`` puts it first; the checkout is never
changed). A removal that leaves every test passing is reported as unnoticed, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "packages" / "worker-runtime-store-fs"
SRC = PACKAGE / "src"
DURABLE = {"fsync", "fsync_dir", "sync"}
TESTS = ["packages/worker-runtime-store-fs", "tests/test_store_contract.py", "-x", "-q", "-p", "no:cacheprovider"]


class Site:
    def __init__(self, path: Path, node: ast.Call, source: str) -> None:
        self.path = path
        self.line = node.lineno
        self.col = node.col_offset
        self.end_line = node.end_lineno or node.lineno
        self.end_col = node.end_col_offset or node.col_offset
        self.code = ast.get_source_segment(source, node) or ""

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(SRC).as_posix()}:{self.line}"

    def removed_from(self, source: str) -> str:
        lines = source.splitlines(keepends=True)
        start = sum(len(line) for line in lines[: self.line - 1]) + _byte_col(lines[self.line - 1], self.col)
        end = sum(len(line) for line in lines[: self.end_line - 1]) + _byte_col(lines[self.end_line - 1], self.end_col)
        return source[:start] + "None" + source[end:]


def _byte_col(line: str, col: int) -> int:
    """ast gives UTF-8 byte offsets; the source is a str."""
    return len(line.encode()[:col].decode())


def call_sites() -> list[Site]:
    sites = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "_fileops.py":
            continue
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "fileops"
                and node.func.attr in DURABLE
            ):
                sites.append(Site(path, node, source))
    return sorted(sites, key=lambda s: (str(s.path), s.line, s.col))


def run_tests(site: Site | None) -> tuple[bool, str]:
    """Run the store tests against a copy of the source without `site` (None: unchanged). True when they pass."""
    with tempfile.TemporaryDirectory(prefix="audit-fsync-") as tmp:
        copy = Path(tmp) / "src"
        shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__"))
        if site is not None:
            target = copy / site.path.relative_to(SRC)
            target.write_text(site.removed_from(site.path.read_text()))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(copy), os.environ.get("PYTHONPATH")])))
        probe = subprocess.run(
            [sys.executable, "-c", "import worker_runtime_store_fs as m; print(m.__file__)"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        if not probe.stdout.strip().startswith(str(copy)):
            raise SystemExit(f"the copy is not what gets imported: {probe.stdout.strip()}")
        done = subprocess.run(
            [sys.executable, "-m", "pytest", *TESTS, "--basetemp", str(Path(tmp) / "pytest")],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        lines = done.stdout.strip().splitlines()
        failed = [line.split()[1] for line in lines if line.startswith("FAILED ")]
        summary = failed[0] if failed else lines[-1] if lines else done.stderr.strip()[-200:]
        return done.returncode == 0, summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", action="store_true", help="only list the call sites")
    parser.add_argument("--jobs", type=int, default=4, help="test runs at once (default 4)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    sites = call_sites()
    if args.list:
        for site in sites:
            print(f"{site.name}  {site.code}")
        return 0
    ok, summary = run_tests(None)
    if not ok:
        print(f"the store tests fail without any change: {summary}", file=sys.stderr)
        return 2
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        results = list(pool.map(run_tests, sites))
    unnoticed = [site for site, (passed, _) in zip(sites, results, strict=True) if passed]
    if args.json:
        report = [
            {"site": site.name, "code": site.code, "noticed": not passed, "tests": summary}
            for site, (passed, summary) in zip(sites, results, strict=True)
        ]
        print(json.dumps({"sites": report, "unnoticed": [s.name for s in unnoticed]}, indent=2))
    else:
        for site, (passed, summary) in zip(sites, results, strict=True):
            print(f"{'UNNOTICED' if passed else 'noticed  '}  {site.name}  {site.code}  ({summary})")
        print(f"{len(sites)} call sites, {len(unnoticed)} removals no test noticed")
    return 1 if unnoticed else 0


if __name__ == "__main__":
    sys.exit(main())
