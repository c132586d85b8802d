"""Profiles: named engine configurations, checked once when the Runtime is built, and selector resolution."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from .config import DEFAULT_PROFILE, ProfileConfig
from .engines.base import Engine
from .errors import ConfigError, UnknownProfileError
from .models import BuiltinProfile, NamedProfile, ProfileSelector, RuntimeDefaultProfile

__all__ = ["BUILTIN_PREFIX", "Profile", "ProfileTable"]

BUILTIN_PREFIX = "builtin:"


class Profile:
    """A checked profile: its name, the engine instance that serves it and its run timeout."""

    __slots__ = ("engine", "engine_name", "name", "timeout_s")

    def __init__(self, name: str, engine_name: str, engine: Engine, timeout_s: float | None) -> None:
        self.name = name
        self.engine_name = engine_name
        self.engine = engine
        self.timeout_s = timeout_s


class ProfileTable:
    """All profiles of a Runtime, including ``default`` (echo unless configured) and ``builtin:<engine>`` for
    every engine that needs no options.

    Raises:
        ConfigError: an unknown engine, options its engine rejects, or a `default_profile` that is not defined.
    """

    def __init__(
        self,
        configs: Mapping[str, ProfileConfig | Mapping[str, object]],
        engines: Mapping[str, type[Engine]],
        default_profile: str = DEFAULT_PROFILE,
    ) -> None:
        self.engines = engines
        self._profiles: dict[str, Profile] = {}
        for name, raw in configs.items():
            if not isinstance(name, str) or not name or name.startswith(BUILTIN_PREFIX):
                raise ConfigError(f"invalid profile name {name!r} (names starting {BUILTIN_PREFIX!r} are reserved)")
            config = raw if isinstance(raw, ProfileConfig) else ProfileConfig.from_table(raw)
            self._profiles[name] = self._build(name, config)
        if DEFAULT_PROFILE not in self._profiles:
            self._profiles[DEFAULT_PROFILE] = self._build(DEFAULT_PROFILE, ProfileConfig("echo"))
        for engine_name, cls in engines.items():
            try:
                options = cls.options_type()
            except TypeError:
                continue  # the engine needs options: no builtin profile for it
            self._profiles[BUILTIN_PREFIX + engine_name] = Profile(
                BUILTIN_PREFIX + engine_name, engine_name, cls(options), None
            )
        if default_profile not in self._profiles:
            raise ConfigError(f"default_profile {default_profile!r} is not a defined profile")
        self.default_name = default_profile

    def _build(self, name: str, config: ProfileConfig) -> Profile:
        cls = self.engines.get(config.engine)
        if cls is None:
            known = ", ".join(sorted(self.engines))
            raise ConfigError(f"profile {name!r}: unknown engine {config.engine!r} (known: {known})")
        try:
            options = msgspec.convert(config.options, cls.options_type)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"profile {name!r} (engine {config.engine!r}): {exc}") from None
        try:
            engine = cls(options)
        except ConfigError as exc:  # an engine that cannot be built (a missing extra, an unset key): name the profile
            raise ConfigError(f"profile {name!r} (engine {config.engine!r}): {exc.message}") from None
        return Profile(name, config.engine, engine, config.timeout_s)

    def names(self) -> list[str]:
        return sorted(self._profiles)

    def get(self, name: str) -> Profile | None:
        return self._profiles.get(name)

    def resolve(self, selector: ProfileSelector) -> Profile:
        """The profile a selector names.

        Raises:
            UnknownProfileError: no such profile (a ``builtin`` selector for an engine that needs options too).
        """
        match selector:
            case RuntimeDefaultProfile():
                name = self.default_name
            case BuiltinProfile(name=engine):
                name = BUILTIN_PREFIX + engine
            case NamedProfile(name=name):
                pass
        profile = self._profiles.get(name)
        if profile is None:
            raise UnknownProfileError(f"no profile named {name!r}", details={"profile": name})
        return profile

    async def aclose(self) -> None:
        for profile in self._profiles.values():
            await profile.engine.aclose()
