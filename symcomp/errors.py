"""symcomp's errors: one hierarchy under :class:`SymcompError`.

::

    SymcompError                  (symcomp_runtime.errors; generated packages raise from it too)
    ├── SpecError                 bad input: a spec, a config, a command-line argument
    │   └── ImportHFError         a Hugging Face config that cannot be imported
    ├── DerivationError           a group whose action cannot be evaluated
    ├── VerificationError         a check that cannot be carried out
    ├── CodegenError              a package that cannot be generated or written
    ├── CheckpointError           a checkpoint that cannot be reduced
    ├── DegenerateError           a point where a gauge cannot be fixed (symcomp_runtime)
    └── RuntimeVersionError       a package compiled for another runtime (symcomp_runtime)

Each carries an optional ``where`` (a :class:`Location`, a key path, a file) and ``hint`` (what is
accepted, what to do). The classes of a stage live next to the code that raises them and subclass
one of these (``ExprError``, ``ActionError``, ``ChartError``, ``OverwriteError``, ...).

A :class:`SpecError` carries everything the CLI needs to print one clean message: the file, the
line and column, the key path, what was found and what is accepted. The CLI turns any
:class:`SymcompError` into a single line on stderr and its ``exit_code`` (2); library callers can
catch it and read the fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from symcomp_runtime.errors import DegenerateError, RuntimeVersionError
from symcomp_runtime.errors import SymcompError as _RuntimeSymcompError

KeyPath = tuple[str | int, ...]


def format_key_path(path: Sequence[str | int]) -> str:
    """``("architecture", "attention", "heads")`` -> ``architecture.attention.heads``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


@dataclass(frozen=True)
class Location:
    """A position in a source file; line and column are 1-based."""

    file: str | None = None
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        parts = [self.file or "<input>"]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input."""

    message: str
    location: Location = field(default_factory=Location)
    key_path: KeyPath = ()
    found: str | None = None
    accepted: str | None = None

    def render(self) -> str:
        text = f"{self.location}: "
        if self.key_path:
            text += f"{format_key_path(self.key_path)}: "
        text += self.message
        if self.found is not None:
            text += f"; found {self.found}"
        if self.accepted is not None:
            text += f"; accepted: {self.accepted}"
        return text


# The root of the hierarchy lives in the runtime (which needs only torch), so that the errors a
# generated package raises and the ones symcomp raises share one base class.
SymcompError = _RuntimeSymcompError


class SpecError(SymcompError):
    """Bad input: a spec, an imported config or a command-line argument that cannot be used."""

    def __init__(self, problems: Problem | Sequence[Problem]):
        self.problems: tuple[Problem, ...] = (
            (problems,) if isinstance(problems, Problem) else tuple(problems)
        )
        assert self.problems, "a SpecError needs at least one problem"
        super().__init__("\n".join(p.render() for p in self.problems))
        first = self.problems[0]  # where and hint are the first problem's; the message has all
        key = format_key_path(first.key_path)
        self.where = f"{first.location}: {key}" if key else str(first.location)
        self.hint = None if first.accepted is None else f"accepted: {first.accepted}"

    @classmethod
    def at(
        cls,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
        key_path: Sequence[str | int] = (),
        found: str | None = None,
        accepted: str | None = None,
    ) -> SpecError:
        return cls(
            Problem(
                message=message,
                location=Location(file, line, column),
                key_path=tuple(key_path),
                found=found,
                accepted=accepted,
            )
        )

    @property
    def first(self) -> Problem:
        return self.problems[0]


class ImportHFError(SpecError):
    """A Hugging Face config that cannot be imported: unreadable, malformed, or describing what
    symcomp does not support; located at the config's file, line and key."""


class DerivationError(SymcompError):
    """A symmetry group whose action cannot be evaluated or derived for this model."""


class VerificationError(SymcompError):
    """A check that cannot be carried out (not a claim found false: a report says that)."""


class CountNotConfirmedError(SymcompError):
    """A count that its own measurement does not confirm: the closed form disagrees with the
    Jacobian nullity of a tiny instance, a named group moves the log-probabilities, or the
    measurement could not be trusted. A finding about the model, not bad input: exit 1."""

    exit_code = 1


class CodegenError(SymcompError):
    """A package that cannot be generated or written."""


class NoReducedModelError(CodegenError):
    """A package without its reduced model: no gauge-fixing chart could be derived or checked
    for its groups. Nothing is written, and the command exits 1 (as a failed check does)."""

    exit_code = 1


class CheckpointError(SymcompError):
    """A checkpoint that cannot be reduced."""


__all__ = [
    "CheckpointError",
    "CodegenError",
    "CountNotConfirmedError",
    "DegenerateError",
    "DerivationError",
    "ImportHFError",
    "KeyPath",
    "Location",
    "NoReducedModelError",
    "Problem",
    "RuntimeVersionError",
    "SpecError",
    "SymcompError",
    "VerificationError",
    "format_key_path",
]
