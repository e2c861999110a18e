"""Configuration files: TOML in, dataclasses with defaults out, unknown keys refused by name."""

from __future__ import annotations

import dataclasses
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


def from_dict(cls: type[T], data: dict, source: str, what: str) -> T:
    """``cls(**data)`` for a dataclass, refusing keys it does not have (``what`` names the table)."""
    if not isinstance(data, dict):
        raise FuseError(f"{source}: [{what}] must be a table")
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise FuseError(f"{source}: unknown {what} setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return cls(**data)
