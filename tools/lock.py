"""Refresh the lock files of the Hatch environments: `hatch run lock` (after changing a dependency on purpose).

Each locked environment of ``hatch.toml`` (``default``, the lean serving one, ``dev``, the test toolchain, and
``gen-client``, the OpenAPI client generator) has a constraints file in ``locks/``: every package it installs,
pinned to one release. Hatch hands the file to uv
(``UV_CONSTRAINT`` in the environment's ``env-vars``), so ``hatch run serve`` and ``hatch run test`` install exactly
those releases on every machine. The packages' own dependency ranges stay ranges; ``hatch run latest:test`` runs the
suite against the newest releases they allow.

The inputs are read from ``hatch.toml`` itself (the workspace members with their features, and the environment's
``dependencies``), resolved with ``uv pip compile --universal`` for every Python the packages support, and written
without the workspace's own packages. A release already locked stays unless an input needs another one;
``--upgrade`` takes the newest releases the ranges allow, and ``--check`` fails when a lock does not match its inputs.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCKED_ENVS = ("default", "dev", "gen-client")
WORKSPACE = ("worker-runtime-core", "worker-runtime-store-fs", "worker-runtime-http", "worker-runtime-client")
PYTHON = "3.11"


def _inputs(env: str) -> list[str]:
    config = tomllib.loads((ROOT / "hatch.toml").read_text(encoding="utf-8"))["envs"][env]
    lines: list[str] = []
    for member in config["workspace"]["members"]:
        path, features = (member, []) if isinstance(member, str) else (member["path"], member.get("features", []))
        extras = f"[{','.join(features)}]" if features else ""
        lines.append(f"-e ./{path}{extras}")
    lines.extend(config.get("dependencies", []))
    return lines


def _compile(env: str, output: Path, *, upgrade: bool) -> None:
    uv = shutil.which("uv")
    if uv is None:
        sys.exit("lock: uv not found on PATH (it comes with `pip install hatch`)")
    with tempfile.NamedTemporaryFile("w", suffix=".in", dir=ROOT, delete=False, encoding="utf-8") as f:
        f.write("\n".join(_inputs(env)) + "\n")
        requirements = Path(f.name)
    command = [uv, "pip", "compile", requirements.name, "--universal", "--python-version", PYTHON, "--quiet"]
    command += ["--no-header", "--no-annotate", "--output-file", str(output)]
    command += [arg for name in WORKSPACE for arg in ("--no-emit-package", name)]
    if upgrade:
        command.append("--upgrade")
    try:
        subprocess.run(command, cwd=ROOT, check=True)
    finally:
        requirements.unlink(missing_ok=True)


def _header(env: str) -> str:
    return (
        f"# The `{env}` Hatch environment's releases, one per package: `hatch run lock` refreshes this file.\n"
        "# Read by uv through UV_CONSTRAINT (hatch.toml); the packages' own ranges stay ranges.\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail when a lock file does not match its inputs")
    parser.add_argument("--upgrade", action="store_true", help="take the newest releases the ranges allow")
    args = parser.parse_args(argv)
    stale: list[str] = []
    for env in LOCKED_ENVS:
        target = ROOT / "locks" / f"{env}.txt"
        with tempfile.TemporaryDirectory() as tmp:
            fresh = Path(tmp) / "lock.txt"
            if target.is_file() and not args.upgrade:  # start from what is locked: only a changed input moves it
                shutil.copy(target, fresh)
            _compile(env, fresh, upgrade=args.upgrade)
            text = _header(env) + fresh.read_text(encoding="utf-8")
        if args.check:
            if not target.is_file() or target.read_text(encoding="utf-8") != text:
                stale.append(str(target.relative_to(ROOT)))
            continue
        target.parent.mkdir(exist_ok=True)
        target.write_text(text, encoding="utf-8")
        print(f"wrote {target.relative_to(ROOT)}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run `hatch run lock`", file=sys.stderr)
        return 1
    if not args.check:
        print("run `hatch env prune` so the environments are made again from the new locks")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
