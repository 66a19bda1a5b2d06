"""Errors that reach the user. Each says what is wrong and where; the CLI prints them on one line."""

from __future__ import annotations


class SynperfError(Exception):
    """Base class: anything the user can fix by changing an input."""


class SpecError(SynperfError):
    """A GPU spec file is missing a field, has a wrong type, or contradicts itself."""


class UnsupportedDtypeError(SpecError):
    """The GPU has no tensor-core rate for the kernel's dtype (e.g. bf16 on a V100)."""


class UnknownGpuError(SynperfError):
    """No spec matches the requested GPU name."""


class InputError(SynperfError):
    """A kernel case (JSON object) is invalid. Carries the offending field and, when known, the line."""

    def __init__(self, message: str, field: str | None = None, line: int | None = None):
        self.message = message
        self.field = field
        self.line = line
        super().__init__(str(self))

    def at_line(self, line: int) -> "InputError":
        return InputError(self.message, self.field, line)

    def __str__(self) -> str:
        where = []
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.field is not None:
            where.append(f"field '{self.field}'")
        return (": ".join(where) + ": " if where else "") + self.message
