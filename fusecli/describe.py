"""What ``fusecli inspect`` reports of a stack: every decision taken about it, as a JSON-ready dict
that :mod:`fusecli.console` prints as a table.
"""

from __future__ import annotations

import dataclasses

from fusecli.choices import Transfer
from fusecli.discover import StackSource
from fusecli.errors import FuseError
from fusecli.exposure import parse_sidecar, plan_exposures, sidecar_time
from fusecli.io import image as image_io
from fusecli.io import raw as raw_io
from fusecli.stack import StackOptions, load_stack, open_stack, validate


def describe(source: StackSource, options: StackOptions | None = None, decode: bool = False) -> dict:
    """A JSON-ready description of a stack and every decision taken about it (``inspect``).

    Pixels are decoded only when the exposure ratios must be estimated from them, when
    ``options.align`` asks for each frame's motion (then under ``"motion"``), or with ``decode``:
    every frame is decoded and a FuseError names the broken ones.
    """
    options = options or StackOptions(align="none")
    if source.single:
        return _single(source)
    broken = decode_errors(source, options.transfer) if decode else []
    if broken:
        more = f" (and {len(broken) - 1} more of the {len(source.frames)} frames)" if len(broken) > 1 else ""
        raise FuseError(broken[0] + more)
    ratios, transfer = options.ratios, options.transfer
    validate(source)
    plan = plan_exposures(source, ratios)
    notes = list(source.notes)
    if plan is None:
        stack = load_stack(source, ratios, transfer)
        infos, found, how, notes, camera = (
            stack.infos,
            stack.ratios,
            stack.ratio_source,
            list(stack.notes),
            stack.camera,
        )
        stack_transfer, space = stack.transfer, stack.space
    else:
        order, found, how = plan
        infos = tuple(source.frames[k] for k in order)
        if how in ("sidecar", "user") and source.sidecar is not None and infos[0].exposure_time is None:
            times = parse_sidecar(source.sidecar)  # show the list's times where EXIF has none
            infos = tuple(dataclasses.replace(i, exposure_time=sidecar_time(times, i)) for i in infos)
        camera = raw_io.read_camera(infos[0].path) if source.kind == "raw" else None  # one decode: CFA and levels
        space = None if source.kind == "raw" else image_io.frame_space(infos[0], transfer)
        stack_transfer = "linear" if space is None or space.linear else "srgb"
    first = infos[0]
    row = {
        "name": source.name,
        "kind": source.kind,
        "frames": [_frame_row(i, r) for i, r in zip(infos, found)],
        "ratios": list(found),
        "ratio_source": how,
        "width": first.width,
        "height": first.height,
        "channels": first.channels,
        "camera": first.camera,
        "cfa": camera.cfa if camera else None,
        "black_level": list(camera.black_level) if camera else None,
        "white_level": camera.white_level if camera else None,
        "transfer": stack_transfer,
        "colour_space": space.name if space else None,
        "label": str(source.label) if source.label else None,
        "notes": notes,
    }
    if options.align != "none":
        row["motion"] = [m.to_dict() for m in open_stack(source, dataclasses.replace(options, deghost=False)).motion]
    return row


def _frame_row(info, ratio: float | None = None) -> dict:
    return {
        "path": str(info.path),
        "page": info.page,
        "exposure_time": info.exposure_time,
        "iso": info.iso,
        "aperture": info.aperture,
        "timestamp": info.timestamp.isoformat() if info.timestamp else None,
        "ratio": ratio,
    }


def _single(source: StackSource) -> dict:
    """A single shot's row: its frame and why it is not a bracket (nothing to fuse)."""
    first = source.frames[0]
    return {
        "name": source.name,
        "kind": source.kind,
        "single": True,
        "frames": [_frame_row(first)],
        "width": first.width,
        "height": first.height,
        "channels": first.channels,
        "camera": first.camera,
        "notes": list(source.notes),
    }


def decode_errors(source: StackSource, transfer: Transfer = "auto") -> list[str]:
    """Decode every frame of a stack, one at a time -> why each broken one fails (empty: all decode).
    What ``inspect --decode`` reports: a header can look fine while the data behind it is not."""
    errors = []
    for info in source.frames:
        try:
            if info.kind == "raw":
                raw_io.read_raw(info.path)
            else:
                image_io.read_frame(info, transfer)
        except FuseError as e:
            errors.append(str(e))
    return errors
