"""In-process plugins for tests/test_core_plugins.py, loaded through real EntryPoint objects."""

from __future__ import annotations

import dataclasses

from pydantic import BaseModel

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


class _Plain(BaseModel):  # not a nestkit.ComponentConfig: a misspelt key would be ignored
    pass


def _named(name: str, **changes: object) -> nestkit.Component:
    return dataclasses.replace(_component("encoder", "unusable"), name=name, **changes)


class ColonName:
    @nestkit.hookimpl
    def nestkit_register_components(register):  # noqa: N805
        register(_named("my:enc"))


class EmptyName:
    @nestkit.hookimpl
    def nestkit_register_components(register):  # noqa: N805
        register(_named(""))


class NoFactory:
    @nestkit.hookimpl
    def nestkit_register_components(register):  # noqa: N805
        register(_named("no_factory", factory=None))


class PlainConfig:
    @nestkit.hookimpl
    def nestkit_register_components(register):  # noqa: N805
        register(_named("plain_config", config=_Plain))


class NotAComponent:
    @nestkit.hookimpl
    def nestkit_register_components(register):  # noqa: N805
        register("not a component")


class ReturnsList:
    @nestkit.hookimpl
    def nestkit_register_components(register):  # noqa: N805 - returns what it should register
        register(_component("encoder", "registered_enc"))
        return [1, 2, 3]


class CheckSection:
    """Registers encoders and answers nestkit_check_section badly for some of them."""

    @nestkit.hookimpl
    def nestkit_check_section(kind, name, workdir):  # noqa: N805, ANN001, ANN205
        if name == "raises":
            raise RuntimeError("x")
        return {"garbage": "garbage", "unknown_field": {"bogus": 1}}.get(name)
