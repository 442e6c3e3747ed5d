"""User-facing errors: one line each, naming the file, the key or the line."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


class NestkitError(Exception):
    """An error caused by the user's input; the CLI prints it as one line and exits with 2."""

    exit_code = 2


class RecipeError(NestkitError):
    """A recipe problem at a dotted key (``model.encoder.n_heads``) of a file."""

    def __init__(self, message: str, key: str = "", file: str = "", field: str = "") -> None:
        # field: the unknown key below ``key`` that the message names (tells which file wrote it)
        self.message, self.key, self.file, self.field = message, key, file, field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ": ".join(part for part in (self.file, self.key) if part)
        return f"{where}: {self.message}" if where else self.message

    @property
    def full_key(self) -> str:
        """The key the error is about, the unknown field included."""
        return ".".join(p for p in (self.key, self.field) if p)

    def at(self, file: str) -> RecipeError:
        """The same error, attributed to a recipe file."""
        return RecipeError(self.message, self.key, self.file or file, self.field)

    def under(self, prefix: str) -> RecipeError:
        """The same error, its key read inside the section at ``prefix``."""
        return RecipeError(self.message, ".".join(p for p in (prefix, self.key) if p), self.file, self.field)


class RecipeErrors(RecipeError):
    """Several recipe problems found in one pass; ``errors`` holds each one (one line each)."""

    def __init__(self, errors: Sequence[RecipeError]) -> None:
        self.errors = [e for err in errors for e in (err.errors if isinstance(err, RecipeErrors) else [err])]
        super().__init__(f"{len(self.errors)} problems")

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)

    def at(self, file: str) -> RecipeErrors:
        return RecipeErrors([e.at(file) for e in self.errors])

    def under(self, prefix: str) -> RecipeErrors:
        return RecipeErrors([e.under(prefix) for e in self.errors])


def combined(errors: Sequence[RecipeError]) -> RecipeError:
    """The one error itself, or all of them as :class:`RecipeErrors`."""
    return errors[0] if len(errors) == 1 else RecipeErrors(errors)


class DataError(NestkitError):
    """Unusable training data (missing manifest, no usable item, wrong sample rate)."""


class CheckpointError(NestkitError):
    """A checkpoint that cannot be read or written."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`; did you mean 'x'?` when a close match exists, else an empty string."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{match[0]}'?" if match else ""
