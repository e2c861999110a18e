"""The command line's options, declared once as ``Annotated`` aliases that every command reuses
(typer's recommended style), and the parsers of comma-separated values. The choice lists themselves
are :mod:`fusecli.choices`'.
"""

from __future__ import annotations

import math
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, List, Optional

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError
from typer.core import TyperGroup

from fusecli.choices import AlignMode, Device, DngKind, Grouping, Method, OutputFormat, Transfer, values
from fusecli.console import one_line
from fusecli.errors import UsageError


class OneLineUsage(TyperGroup):
    """Click's usage errors (an unknown option, a bad value) as one line on stderr, exit code 2, like
    every other refusal (Typer would draw a box of several lines)."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except ClickException as e:
            if isinstance(e, NoArgsIsHelpError):  # no arguments: the help, as asked
                typer.echo(e.format_message(), err=True)
            else:
                typer.echo(f"fusecli: error: {one_line(e.format_message())}", err=True)
            code = e.exit_code
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


def choices(enum: type[Enum], text: str | None, aliases: dict[str, str] | None = None) -> tuple[str, ...] | None:
    """Comma-separated choices of ``enum`` -> their values (a usage error names the choices)."""
    if text is None:
        return None
    names = [(aliases or {}).get(v.strip().lower(), v.strip().lower()) for v in text.split(",") if v.strip()]
    bad = [n for n in names if n not in enum.__members__]
    if bad:
        raise typer.BadParameter(f"{', '.join(bad)}: expected a comma-separated list of {', '.join(enum.__members__)}")
    return tuple(enum[n].value for n in names)


def paths(given: list[Path]) -> list[Path]:
    """The PATHS arguments, with ``-`` replaced by the paths read from standard input: one per line,
    or NUL-separated (``find -print0``) when the input holds a NUL."""
    if not any(str(p) == "-" for p in given):
        return given
    data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
    names = data.split(b"\0") if b"\0" in data else data.splitlines()
    read = [Path(os.fsdecode(n)) for n in names if n.strip()]
    if not read:
        raise UsageError("-: no paths on standard input")
    return [q for p in given for q in (read if str(p) == "-" else [p])]


def ratios(text: str | None) -> tuple[float, ...] | None:
    """``--ratios 1,0.25,0.0625`` -> (1.0, 0.25, 0.0625); a UsageError when a value is not a finite number."""
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
        if not all(math.isfinite(v) for v in values):
            raise ValueError
        return values
    except ValueError:
        raise UsageError(f"--ratios {text!r}: expected comma-separated numbers such as 1,0.25,0.0625") from None


def size(text: str) -> tuple[int, int]:
    """``--size 512x384`` -> (512, 384); a UsageError when it is not WIDTHxHEIGHT."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--size {text!r}: expected WIDTHxHEIGHT such as 512x384") from None
    return width, height


def shard(text: str | None) -> tuple[int, int] | None:
    """``--shard 2/8`` -> (2, 8); a UsageError unless 1 <= I <= N."""
    if text is None:
        return None
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard {text!r}: expected I/N such as 2/8") from None
    if not 1 <= i <= n:
        raise UsageError(f"--shard {text!r}: expected 1 <= I <= N")
    return i, n


def _metavar(kind) -> str | None:
    """What help shows for an option's value: nothing for a flag, a word for the rest (Typer's own
    would be <bool>, <str>, <list[Path]>); None keeps the choices of an Enum."""
    args = [a for a in getattr(kind, "__args__", ()) if a is not type(None)]
    base = args[0] if args else kind
    inner = getattr(base, "__args__", None)
    base = inner[0] if inner else base
    if isinstance(base, type) and issubclass(base, Enum):
        return None
    return {bool: "", int: "N", float: "NUMBER", str: "TEXT", Path: "PATH"}.get(base, "VALUE")


def _opt(kind, *names: str, **kw):
    metavar = _metavar(kind)
    if metavar is not None and "metavar" not in kw:
        kw["metavar"] = metavar
    return Annotated[kind, typer.Option(*names, **kw)]


# --- shared by several commands ------------------------------------------------------------------
Paths = Annotated[
    List[Path],
    typer.Argument(help="Stack folders, folders of stacks, flat folders of photos, or files; - reads them from stdin."),
]
GroupOpt = _opt(
    Grouping,
    "--group",
    help="How frames become brackets: by the pictures and the metadata, the metadata alone, or each folder whole.",
    rich_help_panel="Input",
)
GroupSize = _opt(
    Optional[int], "--group-size", help="Split flat folders into brackets of N frames.", rich_help_panel="Input"
)
Ratios = _opt(
    Optional[str],
    "--ratios",
    help="Exposure ratios, brightest first, e.g. 1,0.25,0.0625 (overrides metadata).",
    rich_help_panel="Input",
)
TransferOpt = _opt(Transfer, "--transfer", help="Transfer of non-RAW frames.", rich_help_panel="Input")
AlignOpt = _opt(AlignMode, "--align", help="Register frames onto the reference first.", rich_help_panel="Alignment")
Deghost = _opt(
    bool,
    "--deghost/--no-deghost",
    help="Where frames disagree after alignment (motion), use the reference.",
    rich_help_panel="Alignment",
)
ModelFile = _opt(
    Optional[Path], "--model", help="Model file (default: the bundled one).", rich_help_panel="Model and device"
)
DeviceOpt = _opt(
    Device, "--device", help="cuda without a GPU is an error, not a fallback.", rich_help_panel="Model and device"
)
AsJson = _opt(bool, "--json", help="Print JSON on stdout (nothing else goes there).", rich_help_panel="Output")
Quiet = _opt(bool, "-q", "--quiet", help="Print nothing but errors (and --json's document).", rich_help_panel="Output")
Verbose = _opt(
    bool, "-v", "--verbose", help="Also print each stack's notes: grouping, colour, ratios.", rich_help_panel="Output"
)
Out = _opt(Path, "-o", "--out", help="Output folder.", rich_help_panel="Output")
Seed = _opt(Optional[int], "--seed", help="Random seed.")

# --- inspect -------------------------------------------------------------------------------------
Decode = _opt(bool, "--decode", help="Decode every frame and report the broken ones (default: headers only).")
InspectAlign = _opt(
    AlignMode, "--align", help="Also decode each stack and report each frame's motion.", rich_help_panel="Alignment"
)

# --- synth ---------------------------------------------------------------------------------------
Radiance = Annotated[Optional[List[Path]], typer.Argument(help="HDR radiance maps (.exr, .hdr) to synthesise from.")]
Stacks = _opt(int, "--stacks", min=1, help="Brackets per radiance map (different crops, noise, CFA).")
Procedural = _opt(int, "--procedural", min=0, help="Brackets of procedural scenes to add.")
Size = _opt(str, "--size", help="Mosaic size WxH (even).")
SynthRatios = _opt(str, "--ratios", help="Exposure ratios, brightest first.")
Cfa = _opt(Optional[str], "--cfa", help="CFA phase (RGGB, BGGR, GRBG, GBRG); random per stack if not given.")
Shift = _opt(float, "--shift", min=0.0, help="Handheld: move each later frame by up to this many pixels in x and y.")
Rotate = _opt(float, "--rotate", min=0.0, help="Handheld: turn each later frame by up to this many degrees.")
Display = _opt(bool, "--display", help="Display-referred brackets: 8-bit PNG frames around a normal exposure.")
Frames = _opt(int, "--frames", min=2, help="Frames per display-referred bracket.")
MovingObject = _opt(bool, "--moving-object", help="Add a small object that moves between frames (a ghost).")

# --- train ---------------------------------------------------------------------------------------
Datasets = Annotated[
    Optional[List[Path]],
    typer.Argument(help="Folders of stacks with labels (label.* beside the frames)."),
]
RunDir = _opt(Optional[Path], "--run-dir", help="Run folder: config, log.jsonl, checkpoints, cache.")
Config = _opt(Optional[Path], "--config", help="TOML configuration: tables model, loss, optim, data, train.")
Val = _opt(Optional[List[Path]], "--val", help="Held-out folder(s) of labelled stacks (default: part of the datasets).")
SynthMaps = _opt(
    Optional[List[Path]], "--synth", help="Radiance maps (.exr/.hdr) to synthesise training brackets from."
)
Steps = _opt(Optional[int], "--steps", help="Total optimiser steps.")
BatchSize = _opt(Optional[int], "--batch-size", help="Samples per optimiser step.")
Lr = _opt(Optional[float], "--lr", help="Peak learning rate (AdamW).")
TrainDevice = _opt(Optional[Device], "--device", help="Where to train (default: the configuration's, auto).")
Workers = _opt(Optional[int], "--workers", help="DataLoader worker processes.")
Overrides = _opt(Optional[List[str]], "--set", help="Any setting as section.key=value, e.g. loss.gamma=20.")
Resume = _opt(Optional[Path], "--resume", help="Continue the run in this folder from its last checkpoint.")
Export = _opt(Optional[Path], "--export", help="Write the trained model (best checkpoint) as PATH.safetensors + .json.")

# --- fuse ----------------------------------------------------------------------------------------
Formats = _opt(
    Optional[str],
    "--format",
    help=f"Comma-separated: {', '.join(values(OutputFormat))} (default: the frames' own kind, dng for RAW).",
    rich_help_panel="Output",
)
Linear = _opt(bool, "--linear", help="Write TIFFs in linear light (with a linear profile).", rich_help_panel="Output")
Quality = _opt(int, "--quality", min=1, max=100, help="JPEG quality.", rich_help_panel="Output")
DngOpt = _opt(
    DngKind,
    "--dng",
    help="RAW stacks' DNG: the scene-linear merge (floating point, every highlight the bracket held) "
    "or the network's tone-fused picture as raw data.",
    rich_help_panel="Output",
)
Overwrite = _opt(
    bool, "--overwrite", help="Replace existing outputs (they are skipped otherwise).", rich_help_panel="Output"
)
DryRun = _opt(
    bool, "--dry-run", help="List what would be fused into which files; write nothing.", rich_help_panel="Output"
)
SaveWeights = _opt(
    bool,
    "--save-weights",
    help="Also write NAME_weights.png: which exposure each pixel came from.",
    rich_help_panel="Output",
)
Shard = _opt(
    Optional[str], "--shard", help="Fuse only shard I of N (e.g. 2/8): a job array's share.", rich_help_panel="Input"
)
Jobs = _opt(
    Optional[int],
    "--jobs",
    min=1,
    help="Stacks decoded, aligned and deghosted at once, one thread each (each holds a stack in memory); "
    "default: one per 4 cores, at most 4; two on 2 cores and more for stacks of up to 7 MP RGB.",
    rich_help_panel="Model and device",
)
MaxMemory = _opt(
    float,
    "--max-memory",
    min=0.001,
    help="GiB for full-resolution temporaries (larger: in bands).",
    rich_help_panel="Model and device",
)

# --- eval ----------------------------------------------------------------------------------------
EvalPaths = Annotated[
    List[Path],
    typer.Argument(
        help="Folders of stacks, with labels (label.* beside the frames) or without; - reads them from stdin."
    ),
]
Methods = _opt(str, "--method", help=f"Comma-separated methods: {', '.join(values(Method))}.")
Preds = _opt(
    Optional[List[Path]], "--pred", help="Folder of another tool's outputs (NAME.* or NAME_fused.*); repeatable."
)
AsCsv = _opt(bool, "--csv", help="Print CSV on stdout: a row per stack and method (aggregates: --json).")
PerStack = _opt(bool, "--per-stack", help="Also show a table row for every stack.")
FailUnder = _opt(Optional[str], "--fail-under", help="Exit 3 if the first method's mean is below any, e.g. psnr=30.")
FailOver = _opt(Optional[str], "--fail-over", help="Exit 3 if the first method's mean is above any, e.g. l1=0.02.")
Report = _opt(Optional[Path], "--report", help="Write a contact sheet per stack and summary.png into this folder.")
