"""Profiles and engines: selectors, the default profile, builtin profiles, entry-point engines."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest
from core_helpers import Shout

from worker_runtime_core import ConfigError, ProfileConfig, Runtime
from worker_runtime_core.engines import registry


async def test_a_configured_default_profile_replaces_echo() -> None:
    async with Runtime(profiles={"default": ProfileConfig("shout")}, engines={"shout": Shout}) as rt:
        await rt.create_worker(worker_id="w")
        ack = await rt.send_input("w", "hi")
        await rt.wait_for_run("w", ack.run_id)
        assert (await rt.transcript("w")).items[-1].content == "HI!"


async def test_runtime_default_follows_default_profile() -> None:
    profiles = {"loud": ProfileConfig("shout")}
    async with Runtime(profiles=profiles, engines={"shout": Shout}, default_profile="loud") as rt:
        worker = await rt.create_worker()
        assert worker.profile == "loud"
        assert (await rt.summary()).capabilities.default_profile == "loud"


async def test_capabilities_come_from_the_engine() -> None:
    async with Runtime(profiles={"loud": ProfileConfig("shout")}, engines={"shout": Shout}) as rt:
        worker = await rt.create_worker(
            profile={"kind": "named", "name": "loud"}, requested_capabilities=[{"name": "volume", "reason": "x"}]
        )
        assert [c.name for c in worker.requested_capabilities] == ["volume"]
        assert (await rt.create_worker(profile={"kind": "builtin", "name": "shout"})).profile == "builtin:shout"


def test_config_errors_name_what_is_wrong() -> None:
    with pytest.raises(ConfigError, match="default_profile"):
        Runtime(default_profile="nope")
    with pytest.raises(ConfigError, match="reserved"):
        Runtime(profiles={"builtin:echo": ProfileConfig("echo")})
    with pytest.raises(ConfigError, match="timeout_s"):
        ProfileConfig("echo", timeout_s=-1)
    with pytest.raises(ConfigError, match="unknown"):
        Runtime(profiles={"x": {"engine": "echo", "colour": "red"}})
    with pytest.raises(ConfigError, match="runtime id"):
        Runtime(runtime_id="../rt")
    with pytest.raises(ConfigError, match="built-in"):
        Runtime(engines={"echo": Shout})


def test_profile_tables_read_like_toml() -> None:
    profile = ProfileConfig.from_table({"engine": "command", "argv": ["ruff"], "timeout_s": 60})
    assert profile == ProfileConfig("command", argv=["ruff"], timeout_s=60)
    assert "argv" in repr(profile) and "ruff" not in repr(profile)  # option values may be secrets


async def test_engines_register_through_the_entry_point_group(monkeypatch: pytest.MonkeyPatch) -> None:
    ep = EntryPoint(name="shout", value="core_helpers:Shout", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [ep] if group == registry.ENTRY_POINT_GROUP else [])
    async with Runtime(profiles={"loud": {"engine": "shout"}}) as rt:
        assert "shout" in (await rt.summary()).capabilities.engines
        await rt.create_worker(worker_id="w", profile={"kind": "named", "name": "loud"})
        ack = await rt.send_input("w", "hey")
        await rt.wait_for_run("w", ack.run_id)
        assert (await rt.transcript("w")).items[-1].content == "HEY!"


def test_a_broken_entry_point_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    ep = EntryPoint(name="broken", value="no_such_module_xyz:Engine", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [ep])
    with pytest.raises(ConfigError, match="broken"):
        Runtime()


def test_an_engine_that_cannot_be_built_names_its_profile() -> None:
    from worker_runtime_core import Engine, RunContext

    class Picky(Engine):
        name = "picky"

        def __init__(self, options: object) -> None:
            raise ConfigError("needs a key")

        async def run(self, ctx: RunContext) -> None:  # pragma: no cover - never built
            raise AssertionError

    with pytest.raises(ConfigError, match=r"profile 'p' \(engine 'picky'\): needs a key"):
        Runtime(profiles={"p": ProfileConfig("picky")}, engines={"picky": Picky})
