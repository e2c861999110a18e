"""Configuration files: TOML in, dataclasses with defaults out, unknown keys refused by name."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import TypeVar

import tomllib

from fusecli.errors import FuseError

T = TypeVar("T")


def read_toml(path: Path) -> dict:
    """The tables of a TOML file; a one-line FuseError when it cannot be read or parsed."""
    try:
        return tomllib.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise FuseError(f"{path}: cannot read the configuration ({e})") from None


def _fits(value, kind) -> bool:
    """Whether a TOML value fits a dataclass field's type (int, float, str, bool, lists, Literal, unions)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Literal:
        return value in args
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if kind is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and (not args or all(_fits(v, args[0]) for v in value))
    if origin is tuple:
        return isinstance(value, (list, tuple))
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    return True  # nested dataclasses are checked by their own from_dict


def check_ranges(obj, section: str, ranges: dict[str, tuple[float | None, float | None]]) -> None:
    """A FuseError naming the first field of ``obj`` outside its range: ``{field: (lowest, highest)}``,
    either end None for none, both inclusive; NaN and infinity are never in range."""
    import math

    for name, (lo, hi) in ranges.items():
        value = getattr(obj, name)
        bad = not math.isfinite(value) or (lo is not None and value < lo) or (hi is not None and value > hi)
        if bad:
            where = f"{'' if lo is None else f'>= {lo:g}'}{' and ' if lo is not None and hi is not None else ''}"
            where += "" if hi is None else f"<= {hi:g}"
            raise FuseError(f"{section}.{name} = {value!r}: must be a finite number {where}".rstrip())


def from_dict(cls: type[T], data: dict, source: str, what: str) -> T:
    """``cls(**data)`` for a dataclass, refusing keys it does not have and values of the wrong type,
    each with one line naming the key (``what`` names the table)."""
    if not isinstance(data, dict):
        raise FuseError(f"{source}: [{what}] must be a table")
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise FuseError(f"{source}: unknown {what} setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        if not _fits(value, hints[key]):
            shown = getattr(hints[key], "__name__", None) or str(hints[key]).replace("typing.", "")
            raise FuseError(f"{source}: {what}.{key} = {value!r} is not a valid {shown}")
    return cls(**data)
