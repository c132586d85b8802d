"""The reference under docs/ against the code's own registries, so a change cannot leave the docs behind.

The docs are written to be parsed: every table this test reads has the route, code, kind, field, key or flag in
backticks in its first column, under a fixed heading. A failure names what is missing from the docs (add it) or
documented but not in the code (remove it, or fix the name).
"""

from __future__ import annotations

import inspect
import re
import tomllib
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

import worker_runtime_core as core
from worker_runtime_client import RuntimeClient, RuntimeEntry, RuntimePool
from worker_runtime_core import errors as core_errors
from worker_runtime_core import models as core_models
from worker_runtime_core.engines import BUILTIN_ENGINES
from worker_runtime_core.engines.openai import PROVIDER_ERROR_CODES
from worker_runtime_core.profiles import ProfileTable
from worker_runtime_core.records import EVENT_DATA_TYPES
from worker_runtime_http import cli
from worker_runtime_http.config import SETTINGS, ServerConfig, env_name, flag_name
from worker_runtime_http.errors import status_for
from worker_runtime_http.routes import ENDPOINTS, HealthStatus

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
WIRE = DOCS / "wire.md"
CONFIGURATION = DOCS / "configuration.md"
PYTHON_API = DOCS / "python-api.md"

# --- where the code keeps its registries (one helper each, so a new constant is one line to change) --------------


def known_event_kinds() -> set[str]:
    """Every event kind this version logs."""
    return set(core.KNOWN_EVENT_KINDS)


def known_run_statuses() -> set[str]:
    return set(core.KNOWN_RUN_STATUSES)


def known_error_codes() -> dict[str, type[core.WorkerRuntimeError]]:
    """Every wire code core has a class for: the classes of core's errors module that `error_class_for_code` maps
    their code back to (abstract bases such as `ConflictError` have none)."""
    found: dict[str, type[core.WorkerRuntimeError]] = {}
    pending: list[type[core.WorkerRuntimeError]] = [core.WorkerRuntimeError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__ == core_errors.__name__ and core.error_class_for_code(cls.code) is cls:
            found[cls.code] = cls
    return found


def cli_flags() -> set[str]:
    """Every ``--flag`` of the command line and its subcommands, ``--help`` aside."""
    flags: set[str] = set()
    parsers = [cli._parser()]
    while parsers:
        parser = parsers.pop()
        for action in parser._actions:
            if isinstance(action, cli.argparse._SubParsersAction):
                parsers.extend(action.choices.values())
            flags.update(s for s in action.option_strings if s.startswith("--") and s != "--help")
    return flags


# --- reading the docs -----------------------------------------------------------------------------------------


def section(path: Path, heading: str) -> str:
    """The text under the heading `heading` (without its ``#``s), up to the next heading of its level or above."""
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        match = re.fullmatch(r"(#+) (.*)", line)
        if match and match.group(2) == heading:
            level = len(match.group(1))
            end = next(
                (j for j in range(i + 1, len(lines)) if re.match(rf"#{{1,{level}}} ", lines[j])),
                len(lines),
            )
            return "\n".join(lines[i + 1 : end])
    raise AssertionError(f"{path.name} has no heading {heading!r}")


def table(text: str) -> list[list[str]]:
    """The body rows of the first Markdown table in `text`, as cells (``\\|`` inside a cell is not a separator)."""
    rows: list[list[str]] = []
    started = False
    for line in text.splitlines():
        if line.startswith("|"):
            started = True
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                rows.append(cells)
        elif started:
            break
    return rows[1:]  # the header row goes


def first_code(cell: str) -> str:
    match = re.search(r"`([^`]+)`", cell)
    assert match, f"no `code` in table cell {cell!r}"
    return match.group(1)


def codes(cell: str) -> set[str]:
    return set(re.findall(r"`([^`]+)`", cell))


def keyed(rows: Iterable[list[str]]) -> dict[str, list[str]]:
    """Rows by the code in their first cell; a key documented twice is an error."""
    found: dict[str, list[str]] = {}
    for row in rows:
        key = first_code(row[0])
        assert key not in found, f"{key!r} is documented twice"
        found[key] = row
    return found


def assert_same(documented: Iterable[str], expected: Iterable[str], what: str) -> None:
    documented, expected = set(documented), set(expected)
    missing, extra = sorted(expected - documented), sorted(documented - expected)
    assert not missing and not extra, f"{what}: missing from the docs {missing}, documented but not in the code {extra}"


def assert_default(cell: str, field: msgspec.structs.FieldInfo | None, default: Any, what: str) -> None:
    """A default cell says ``required``, ``none ...`` for None, or the value as TOML in backticks."""
    text = cell.strip()
    if field is not None and field.required:
        assert text.startswith("required"), f"{what}: documented default {text!r}, but it is required"
        return
    if default is None:
        assert text.startswith("none"), f"{what}: documented default {text!r}, but it is unset (none)"
        return
    value = tomllib.loads(f"v = {first_code(text)}")["v"]
    assert value == default, f"{what}: documented default {value!r}, the code's is {default!r}"


def field_default(field: msgspec.structs.FieldInfo) -> Any:
    if field.default is not msgspec.NODEFAULT:
        return field.default
    if field.default_factory is not msgspec.NODEFAULT:
        return field.default_factory()
    return None


# --- the wire contract -------------------------------------------------------------------------------------------


def route_rows() -> dict[tuple[str, str], list[str]]:
    rows: dict[tuple[str, str], list[str]] = {}
    for key, row in keyed(table(section(WIRE, "Routes"))).items():
        method, path = key.split(" ", 1)
        rows[(method, path)] = row
    return rows


def test_the_wire_doc_lists_every_route_and_no_other() -> None:
    assert_same((f"{m} {p}" for m, p in route_rows()), (f"{e.method} {e.path}" for e in ENDPOINTS), "routes in wire.md")


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: f"{e.method} {e.path}")
def test_each_route_s_status_and_own_error_codes_are_the_code_s(endpoint: Any) -> None:
    row = route_rows()[(endpoint.method, endpoint.path)]
    assert int(row[1]) == endpoint.status, f"{endpoint.method} {endpoint.path}: success status"
    assert_same(codes(row[3]), endpoint.errors, f"error codes of {endpoint.method} {endpoint.path}")


def test_every_error_code_is_documented_with_its_status_and_retryable() -> None:
    rows = keyed(table(section(WIRE, "Error codes")))
    registry = known_error_codes()
    assert_same(rows, registry, "error codes in wire.md")
    for code, cls in registry.items():
        row = rows[code]
        assert int(row[1]) == status_for(cls), f"{code}: documented status {row[1]}, the server's {status_for(cls)}"
        assert row[2] in ("yes", "no"), f"{code}: retryable must read yes or no, not {row[2]!r}"
        assert (row[2] == "yes") == cls.retryable, f"{code}: documented retryable {row[2]!r}"


def test_the_openai_engine_s_run_error_codes_are_documented() -> None:
    documented = set(keyed(table(section(WIRE, "Run error codes"))))
    missing = sorted(PROVIDER_ERROR_CODES - documented)
    assert not missing, f"run error codes missing from wire.md: {missing}"
    wire_codes = set(known_error_codes()) - {"runtime_unavailable"}  # a store failure can end a run too
    assert not documented & wire_codes, "a run error code in wire.md is an HTTP error code"


def test_every_event_kind_is_documented_with_its_data() -> None:
    rows = keyed(table(section(WIRE, "Event kinds")))
    assert_same(rows, known_event_kinds(), "event kinds in wire.md")
    for kind, row in rows.items():
        data = first_code(row[2])
        assert data.startswith("{") and data.endswith("}"), f"{kind}: data must start with `{{fields}}`"
        documented = set(re.findall(r"[a-z_]+", data))
        fields = msgspec.structs.fields(EVENT_DATA_TYPES[kind])
        required = {f.name for f in fields if f.required}
        assert required <= documented, f"{kind}: data fields missing from wire.md: {sorted(required - documented)}"
        extra = documented - {f.name for f in fields}
        assert not extra, f"{kind}: data fields documented but not in the code: {sorted(extra)}"


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("Worker statuses", lambda: set(typing.get_args(core.WorkerStatus))),
        ("Run statuses", known_run_statuses),
        ("Runtime statuses", lambda: set(typing.get_args(core_models.RuntimeStatus))),
    ],
)
def test_every_status_is_documented(heading: str, expected: Any) -> None:
    assert_same(keyed(table(section(WIRE, heading))), expected(), f"{heading.lower()} in wire.md")


SHAPES: dict[str, type[msgspec.Struct]] = {
    "WorkerRef": core.WorkerRef,
    "RunInfo": core.RunInfo,
    "RunError": core.RunError,
    "TokenUsage": core.TokenUsage,
    "UsageTotals": core.UsageTotals,
    "WorkerSummary": core.WorkerSummary,
    "RuntimeSummary": core.RuntimeSummary,
    "StoreInfo": core.StoreInfo,
    "WorkerCounts": core.WorkerCounts,
    "CapabilitiesInfo": core.CapabilitiesInfo,
    "CreateWorkerRequest": core.CreateWorkerRequest,
    "CapabilityRequest": core.CapabilityRequest,
    "ResourceRef": core.ResourceRef,
    "ConfigBundleRef": core.ConfigBundleRef,
    "InputRequest": core.InputRequest,
    "InputAck": core.InputAck,
    "StopRequest": core.StopRequest,
    "CancelRequest": core.CancelRequest,
    "WorkerAck": core.WorkerAck,
    "TranscriptEntry": core.TranscriptEntry,
    "TranscriptPage": core.TranscriptPage,
    "Event": core.Event,
    "EventPage": core.EventPage,
    "StreamEvent": core.StreamEvent,
    "WorkersPage": core.WorkersPage,
    "Diagnostic": core.Diagnostic,
    "ErrorBody": core.ErrorBody,
    "HealthStatus": HealthStatus,
    "PendingRequest": core.PendingRequest,
    "RespondRequest": core.RespondRequest,
    "RespondAck": core.RespondAck,
    "OpenRequest": core.OpenRequest,
    "RequestsPage": core.RequestsPage,
}


def _field_names(struct: type[msgspec.Struct]) -> set[str]:
    return {f.encode_name for f in msgspec.structs.fields(struct)}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_every_field_of_each_shape_is_documented(name: str) -> None:
    documented = keyed(table(section(WIRE, f"`{name}`")))
    assert_same(documented, _field_names(SHAPES[name]), f"fields of {name} in wire.md")


def test_worker_detail_documents_the_fields_it_adds_to_the_summary() -> None:
    documented = keyed(table(section(WIRE, "`WorkerDetail`")))
    added = _field_names(core.WorkerDetail) - _field_names(core.WorkerSummary)
    assert_same(documented, added, "fields WorkerDetail adds, in wire.md")


@pytest.mark.parametrize(("name", "union"), [("Intent", core.Intent), ("ProfileSelector", core.ProfileSelector)])
def test_every_variant_of_each_tagged_union_is_documented_with_its_fields(name: str, union: Any) -> None:
    rows = keyed(table(section(WIRE, f"`{name}`")))
    variants = {cls.__struct_config__.tag: cls for cls in typing.get_args(union)}
    assert_same(rows, variants, f"kinds of {name} in wire.md")
    for tag, cls in variants.items():
        assert_same(codes(rows[tag][1]), _field_names(cls), f"fields of {name} {tag!r} in wire.md")


# --- configuration -----------------------------------------------------------------------------------------------


def setting_rows() -> dict[str, list[str]]:
    return keyed(table(section(CONFIGURATION, "Settings")))


def test_every_setting_is_documented_with_its_flag_variable_and_default() -> None:
    rows = setting_rows()
    assert_same(rows, [*SETTINGS, "config"], "settings in configuration.md")
    fields = {f.name: f for f in msgspec.structs.fields(ServerConfig)}
    for key, row in rows.items():
        assert flag_name(key) in re.findall(r"--[a-z][a-z-]*", row[1]), (
            f"{key}: flag {flag_name(key)} not in {row[1]!r}"
        )
        assert first_code(row[2]) == env_name(key), f"{key}: variable {env_name(key)}, documented {row[2]!r}"
        if key in fields:
            assert_default(row[3], None, field_default(fields[key]), f"setting {key}")


def test_the_file_s_tables_are_the_documented_ones() -> None:
    assert set(ServerConfig.__struct_fields__) == {*SETTINGS, "limits", "profiles"}, "a new table: document it"
    section(CONFIGURATION, "`[limits]`")
    section(CONFIGURATION, "Profiles")


def test_every_cli_flag_is_documented_and_no_other() -> None:
    documented: set[str] = set()
    for row in setting_rows().values():
        documented.update(re.findall(r"--[a-z][a-z-]*", row[1]))
    for row in table(section(CONFIGURATION, "Commands")):
        documented.update(re.findall(r"--[a-z][a-z-]*", row[0]))
    assert_same(documented, cli_flags(), "command-line flags in configuration.md")


def test_every_worker_runtime_variable_is_documented_and_no_other() -> None:
    documented = set(re.findall(r"\bWORKER_RUNTIME_[A-Z0-9_]+", CONFIGURATION.read_text()))
    assert_same(documented, {env_name(s) for s in [*SETTINGS, "config"]}, "WORKER_RUNTIME_* variables")


def test_every_limit_is_documented_with_its_default() -> None:
    rows = keyed(table(section(CONFIGURATION, "`[limits]`")))
    fields = msgspec.structs.fields(core.Limits)
    assert_same(rows, (f.name for f in fields), "[limits] keys in configuration.md")
    for field in fields:
        assert_default(rows[field.name][1], field, field_default(field), f"[limits] {field.name}")


def test_the_keys_every_profile_has_are_documented() -> None:
    rows = keyed(table(section(CONFIGURATION, "Every profile")))
    params = inspect.signature(core.ProfileConfig).parameters.values()
    assert_same(rows, (p.name for p in params if p.kind is not p.VAR_KEYWORD), "keys of every profile")
    assert rows["engine"][1].startswith("required"), "a [profiles.NAME] table must name its engine (from_table)"
    assert_default(rows["timeout_s"][1], None, None, "profile timeout_s")


@pytest.mark.parametrize("engine", sorted(BUILTIN_ENGINES))
def test_every_option_of_each_built_in_engine_is_documented_with_its_default(engine: str) -> None:
    text = section(CONFIGURATION, f"The `{engine}` engine")
    rows = keyed(table(text))
    fields = {f.name: f for f in msgspec.structs.fields(BUILTIN_ENGINES[engine].options_type)}
    assert_same(set(rows), fields, f"options of the {engine} engine in configuration.md")
    for name, field in fields.items():
        assert_default(rows[name][1], field, field_default(field), f"{engine} option {name}")
    if not fields:
        assert "No options." in text, f"say that the {engine} engine takes no options"


def test_the_exit_codes_are_documented() -> None:
    documented = set(keyed(table(section(CONFIGURATION, "Exit codes"))))
    expected = {"0", str(cli.EXIT_START), str(cli.EXIT_CONFIG), "128 + N"}
    assert_same(documented, expected, "exit codes in configuration.md")


def test_the_runtimes_file_keys_are_documented() -> None:
    rows = keyed(table(section(CONFIGURATION, "A Backend's runtimes file")))
    fields = msgspec.structs.fields(RuntimeEntry)
    assert_same(rows, (f.name for f in fields), "keys of a runtimes file entry")
    for field in fields:
        assert_default(rows[field.name][1], field, field_default(field), f"runtimes file {field.name}")


def _blocks(path: Path, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", path.read_text(), flags=re.S)


def test_every_toml_example_in_the_configuration_doc_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")  # the example profile names this variable
    blocks = _blocks(CONFIGURATION, "toml")
    assert blocks, "configuration.md has no toml examples"
    profiles: list[tuple[str, dict[str, Any]]] = []
    for block in blocks:
        table = tomllib.loads(block)
        if "runtimes" in table:
            continue  # a Backend's runtimes file: checked below
        msgspec.convert(table, ServerConfig)  # every key known, every value of the right type
        profiles.extend(table.get("profiles", {}).items())
    assert profiles, "configuration.md shows no profile"
    for name, profile in profiles:
        ProfileTable({name: profile}, BUILTIN_ENGINES)  # the engine accepts the options


def test_the_runtimes_file_example_is_valid() -> None:
    examples = [tomllib.loads(b) for b in _blocks(CONFIGURATION, "toml") if "[runtimes." in b]
    assert len(examples) == 1
    for runtime_id, entry in examples[0]["runtimes"].items():
        assert core.is_valid_id(runtime_id)
        msgspec.convert(entry, RuntimeEntry)


async def test_the_engine_example_runs_as_written() -> None:
    (source,) = [b for b in _blocks(PYTHON_API, "python") if "class ShoutEngine" in b]
    namespace: dict[str, Any] = {}
    exec(compile(source, "python-api.md", "exec"), namespace)
    profiles = {"shout": core.ProfileConfig(engine="shout", suffix="?")}
    async with core.Runtime(engines={"shout": namespace["ShoutEngine"]}, profiles=profiles) as rt:
        wid = (await rt.create_worker(profile=core.NamedProfile(name="shout"))).worker_ref.worker_id
        done = await rt.wait_for_run(wid, (await rt.send_input(wid, "hey")).run_id)
        failed = await rt.wait_for_run(wid, (await rt.send_input(wid, " ")).run_id)
        page = await rt.transcript(wid)
    assert (done.status, done.usage) == ("completed", core.TokenUsage(input_tokens=0, output_tokens=1))
    assert page.items[1].content == "HEY?"
    assert failed.error == core.RunError(code="nothing_to_shout", message="the input is blank")


async def test_the_streaming_engine_example_runs_as_written() -> None:
    (source,) = [b for b in _blocks(PYTHON_API, "python") if "class StreamEngine" in b]
    namespace: dict[str, Any] = {}
    exec(compile(source, "python-api.md", "exec"), namespace)
    profiles = {"stream": core.ProfileConfig(engine="stream")}
    async with core.Runtime(engines={"stream": namespace["StreamEngine"]}, profiles=profiles) as rt:
        wid = (await rt.create_worker(profile=core.NamedProfile(name="stream"))).worker_ref.worker_id
        ack = await rt.send_input(wid, "one two")
        done = await rt.wait_for_run(wid, ack.run_id)
        page = await rt.transcript(wid, run_id=ack.run_id)
    assert done.status == "completed"
    assert [e.content for e in page.items] == ["one two", "one two "]


async def test_the_parking_engine_example_runs_as_written() -> None:
    (source,) = [b for b in _blocks(PYTHON_API, "python") if "class AskLike" in b]
    namespace: dict[str, Any] = {}
    exec(compile(source, "python-api.md", "exec"), namespace)
    profiles = {"ask_like": core.ProfileConfig(engine="ask_like")}
    async with core.Runtime(engines={"ask_like": namespace["AskLike"]}, profiles=profiles) as rt:
        wid = (await rt.create_worker(profile=core.NamedProfile(name="ask_like"))).worker_ref.worker_id
        ack = await rt.send_input(wid, "ship it")
        with anyio.fail_after(10):
            while True:  # woken by each durable write, until the run asks
                signal = rt.event_signal()
                request = (await rt.get_run(wid, ack.run_id)).pending_request
                if request is not None:
                    break
                await signal.wait()
        await rt.respond(wid, ack.run_id, request.request_id, approved=True)
        assert (await rt.wait_for_run(wid, ack.run_id)).status == "completed"
        assert (await rt.transcript(wid)).items[-1].content == "approved"


async def test_the_core_readme_s_approval_engine_runs_as_written_in_under_20_lines() -> None:
    core_readme = ROOT / "packages" / "worker-runtime-core" / "README.md"
    (source,) = [b for b in _blocks(core_readme, "python") if "class Guarded" in b]
    assert len(source.strip().splitlines()) < 20
    namespace: dict[str, Any] = {}
    exec(compile(source, "README.md", "exec"), namespace)
    profiles = {"guarded": core.ProfileConfig(engine="guarded")}
    async with core.Runtime(engines={"guarded": namespace["Guarded"]}, profiles=profiles) as rt:
        wid = (await rt.create_worker(profile=core.NamedProfile(name="guarded"))).worker_ref.worker_id
        entries = []
        for approved in (True, False):
            ack = await rt.send_input(wid, "make clean")
            with anyio.fail_after(10):
                while True:  # woken by each durable write, until the run asks
                    signal = rt.event_signal()
                    request = (await rt.get_run(wid, ack.run_id)).pending_request
                    if request is not None:
                        break
                    await signal.wait()
            assert (request.kind, request.prompt) == ("approval", "run `make clean`?")
            await rt.respond(wid, ack.run_id, request.request_id, approved=approved)
            assert (await rt.wait_for_run(wid, ack.run_id)).status == "completed"
            entries.append((await rt.transcript(wid)).items[-1].content)
    assert entries == ["ran make clean", "did not run it (answered)"]


# --- the Python API ----------------------------------------------------------------------------------------------


def _public_methods(cls: type) -> set[str]:
    return {
        name
        for name, member in vars(cls).items()
        if not name.startswith("_") and (inspect.isfunction(member) or isinstance(member, classmethod))
    }


@pytest.mark.parametrize(
    ("cls", "heading"),
    [
        (core.Runtime, "The Runtime"),
        (RuntimeClient, "The client (`RuntimeClient`)"),
        (RuntimePool, "Many runtimes (`RuntimePool`)"),
    ],
    ids=["Runtime", "RuntimeClient", "RuntimePool"],
)
def test_every_public_method_is_documented_in_its_class_s_section(cls: type, heading: str) -> None:
    text = section(PYTHON_API, heading)
    missing = sorted(m for m in _public_methods(cls) if f"`{m}(" not in text and f".{m}(" not in text)
    assert not missing, f"{cls.__name__} methods missing from python-api.md: {missing}"


# --- links -------------------------------------------------------------------------------------------------------


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_anchor(m) for m in re.findall(r"^#+ (.*)$", path.read_text(), flags=re.M)}


LINKED = [*sorted(DOCS.glob("*.md")), *sorted((ROOT / "packages").glob("*/README.md")), ROOT / "README.md"]


@pytest.mark.parametrize("page", LINKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_to_the_docs_resolve(page: Path) -> None:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if "://" in target:
            continue
        file, _, anchor = target.partition("#")
        linked = (page.parent / file).resolve() if file else page
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: broken links {broken}"
