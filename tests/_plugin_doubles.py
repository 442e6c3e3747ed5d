"""In-process plugins for tests/test_core_plugins.py, loaded through real EntryPoint objects."""

from __future__ import annotations

import nestkit


class _Config(nestkit.ComponentConfig):
    pass


def _component(kind: str, name: str) -> nestkit.Component:
    return nestkit.Component(kind, name, lambda cfg: name, _Config, "test double")


class Good:
    @nestkit.hookimpl
    def nestkit_register_components(register):  # noqa: N805 - a plugin object, not an instance
        register(_component("encoder", "good_enc"))


class Raising:
    @nestkit.hookimpl
    def nestkit_register_components(register):  # noqa: N805
        register(_component("encoder", "raising_enc"))
        raise RuntimeError("half-way through")


class Invalid:
    @nestkit.hookimpl
    def nestkit_register_components(register):  # noqa: N805
        register(_component("decoder", "invalid_dec"))
        register(_component("decodr", "typo"))


class Unmarked:
    def nestkit_register_components(register):  # noqa: N805 - forgot @nestkit.hookimpl
        register(_component("encoder", "unmarked_enc"))
