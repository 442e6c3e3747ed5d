"""Fails on import, as a plugin with a missing dependency would."""

import nestkit_dependency_that_does_not_exist  # noqa: F401
