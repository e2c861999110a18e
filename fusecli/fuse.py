"""Fusing stacks: the network on one stack (in bands of rows when it is large), and the batch loop
that opens, fuses and writes every stack of a run (one bad stack does not stop the others).

What is written is :mod:`fusecli.outputs`'s; docs/fusing.md describes the behaviour and its
guarantees.
"""

from __future__ import annotations

import dataclasses
import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from fusecli.discover import StackSource
from fusecli.errors import FuseError, UsageError
from fusecli.io.common import write_error
from fusecli.merge import merge_linear
from fusecli.model import FuseNet
from fusecli.outputs import OutputOptions, needs, output_paths, remove_stale_parts, write_outputs
from fusecli.runtime import usable_cores
from fusecli.stack import Stack, StackOptions, open_stack, prefetch

#: GiB of full-resolution temporaries by default (``fuse --max-memory``).
MAX_MEMORY_GIB = 0.25
#: The most stacks opened at once by default (each holds a stack in memory).
MAX_DEFAULT_JOBS = 4
#: Stacks whose frames take at most this (as float32: 7 MP RGB, 3 frames) get a second opener on two
#: cores and more: each costs little memory, and opening with alignment outlasts the fusion.
SMALL_STACK_BYTES = 256 * 2**20


def default_jobs(sources: Sequence[StackSource] = ()) -> int:
    """Stacks opened at once when ``fuse --jobs`` is not given: one per four usable cores, at most
    :data:`MAX_DEFAULT_JOBS`; at least two on two cores and more when every one of ``sources`` is
    small (:data:`SMALL_STACK_BYTES`). Opening (LibRaw, tifffile, registration, deghosting) runs
    mostly on one core while the fusion takes every core (or the GPU). On two cores a second opener
    pays where opening with alignment outlasts the fusion: small stacks take it for one more stack's
    memory, large ones keep one there, where it gains nothing and costs a stack's memory
    (``bench/bench_folder.py``, ``bench/bench_enfuse.py`` and ``bench/bench_fuse.py`` take ``--jobs``)."""
    cores = usable_cores()
    jobs = max(1, min(MAX_DEFAULT_JOBS, cores // 4))
    if cores >= 2 and sources and max(s.frame_bytes for s in sources) <= SMALL_STACK_BYTES:
        jobs = max(jobs, 2)
    return jobs


@dataclass(frozen=True)
class FuseOptions:
    """How a run fuses (as :class:`fusecli.evaluate.EvalOptions` scores): how stacks are opened, what
    is written, GiB of full-resolution temporaries (larger stacks go in bands of rows), whether to
    only plan, and how many stacks are opened at once (None: :func:`default_jobs`)."""

    stack: StackOptions = StackOptions()
    output: OutputOptions = OutputOptions()
    max_memory: float = MAX_MEMORY_GIB
    dry_run: bool = False
    jobs: int | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_memory) and 0.001 <= self.max_memory <= 4096):
            raise UsageError(f"--max-memory {self.max_memory}: expected GiB between 0.001 and 4096")


@dataclass
class Result:
    """What happened to one stack (the summary's row)."""

    stack: str
    status: str  # "fused", "skipped", "failed", "single" (a single shot: not fused) or "planned" (dry run)
    outputs: list[str] = field(default_factory=list)
    reason: str | None = None
    seconds: float = 0.0
    megapixels: float = 0.0
    motion: list[dict] = field(default_factory=list)  # per frame: fusecli.align.FrameMotion as a dict
    warnings: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)  # the frame files, brightest first
    notes: list[str] = field(default_factory=list)  # how the stack was found and opened


def band_rows(shape: Sequence[int], weight_channels: int, max_memory_gib: float) -> int:
    """Rows per band so that the full-resolution temporaries of a (K, C, H, W) stack fit the budget:
    per row about (4 K Cw + C + K) float32 maps of width W (logits, weights, A and b upsampled, fused,
    guide)."""
    k, c, _, width = shape
    per_row = 4 * width * (4 * k * weight_channels + c + k)
    return max(16, int(max_memory_gib * 2**30 // per_row))


@torch.inference_mode()
def fuse_stack(
    model: FuseNet,
    stack: Stack,
    device: torch.device,
    max_memory_gib: float = MAX_MEMORY_GIB,
    keep_weights: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Run the model on one stack -> fused (C, H, W) float32 [0, 1] and weights (K, 1 or C, H, W)
    (None unless ``keep_weights``). Stacks whose temporaries exceed ``max_memory_gib`` go in bands
    of rows, with the same result."""
    frames = torch.from_numpy(stack.frames)[None].to(device)
    ratios = torch.tensor(stack.ratios, dtype=torch.float32)[None].to(device)
    shown = torch.tensor([float(stack.transfer == "srgb")], device=device)  # decoded from camera JPEG/PNG
    rows = band_rows(stack.frames.shape, model.config.weight_channels(stack.frames.shape[1]), max_memory_gib)
    if device.type == "cuda":
        # float16, not bfloat16: as fast and closer to float32 (bench/bench_gpu.py compares them); the
        # network's activations are far inside float16's range
        with torch.autocast("cuda", dtype=torch.float16):
            fused, weights = model(frames, ratios, band_rows=rows, keep_weights=keep_weights, display_referred=shown)
    else:
        fused, weights = model(frames, ratios, band_rows=rows, keep_weights=keep_weights, display_referred=shown)
    out = fused[0].float()
    total = float(out.sum())  # one pass for both checks: NaN or Inf anywhere makes it non-finite
    if not math.isfinite(total):
        raise FuseError(f"stack {stack.name}: the model produced non-finite values; nothing was written")
    out = to_host(out.clamp_(0, 1))
    if total <= 0.0 and not out.any() and stack.frames.any():  # a positive sum has a positive pixel
        raise FuseError(
            f"stack {stack.name}: the model produced an all-black image from non-black frames; nothing was written"
        )
    return out, (to_host(weights[0].float()) if weights is not None else None)


def to_host(t: torch.Tensor) -> np.ndarray:
    """A tensor's values as a host array; from a CUDA device through page-locked memory (torch's
    caching host allocator), which copies at the bus's speed."""
    if t.device.type != "cuda":
        return t.cpu().numpy()
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    return host.copy_(t).numpy()


def fuse_sources(
    sources: Sequence[StackSource],
    model: FuseNet | None,
    device: torch.device,
    out_dir: Path,
    options: FuseOptions = FuseOptions(),
    *,
    on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Fuse every stack into ``out_dir``, reporting each result to ``on_result`` in order; opening
    the next ``options.jobs`` stacks (one thread each) overlaps fusion of this one."""
    out_dir = Path(out_dir)
    stack_options, output_options, dry_run = options.stack, options.output, options.dry_run
    if not dry_run:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise FuseError(f"{out_dir}: cannot create the output folder ({e.strerror})") from None
        remove_stale_parts(out_dir)
    results: list[Result] = []
    todo: dict[str, list[Path]] = {}
    inputs = {s.name: [str(f.path) for f in s.frames] for s in sources}
    for source in sources:
        result = _plan(source, out_dir, output_options, dry_run)
        if result is None:
            todo[source.name] = output_paths(source, out_dir, output_options)
            continue
        result.notes = list(source.notes)
        _report(result, results, on_result, inputs)
    if dry_run or not todo:
        return results
    opening = [s for s in sources if s.name in todo]
    if device.type == "cuda":  # frames decoded into page-locked memory: the copy to the GPU at the bus's speed
        stack_options = dataclasses.replace(stack_options, pinned=True)
    # Three stages in flight: the next stack is opened (prefetch's thread) while this one is fused
    # (here) and the previous one is encoded and written (the writer's thread); LibRaw, OpenCV,
    # tifffile and torch release the GIL. Results are reported in order.
    with ThreadPoolExecutor(max_workers=1) as writer:
        writing: Future | None = None
        for source, stack, error in prefetch(
            opening, lambda s: open_stack(s, stack_options), ahead=options.jobs or default_jobs(opening)
        ):
            t0 = time.perf_counter()
            paths = todo[source.name]
            if error is not None:
                job = None
                result = Result(source.name, "failed", reason=str(error))
            else:
                try:
                    network, merge = needs(source, output_options)
                    fused, weights = (
                        fuse_stack(model, stack, device, options.max_memory, keep_weights=output_options.save_weights)
                        if network
                        else (None, None)
                    )
                    merged = merge_linear(stack.frames, stack.ratios) if merge else None
                    # the writer needs the stack's metadata, not its frames: they are let go now (with
                    # three stacks in flight, one stack's frames fewer in memory)
                    meta = dataclasses.replace(stack, frames=np.empty((0, *stack.frames.shape[1:]), np.float32))
                    job = writer.submit(
                        _write,
                        meta,
                        source,
                        fused,
                        weights,
                        options=output_options,
                        paths=paths,
                        out_dir=out_dir,
                        stack_options=stack_options,
                        t0=t0,
                        merged=merged,
                    )
                except FuseError as e:
                    job, result = None, Result(source.name, "failed", reason=str(e))
            if writing is not None:  # the previous stack's row first
                _report(writing.result(), results, on_result, inputs)
            writing = job
            if job is None:
                _report(result, results, on_result, inputs)
        if writing is not None:
            _report(writing.result(), results, on_result, inputs)
    return results


def _report(
    result: Result, results: list[Result], on_result: Callable[[Result], None] | None, inputs: dict[str, list[str]]
) -> None:
    result.inputs = inputs[result.stack]
    results.append(result)
    if on_result:
        on_result(result)


def _write(
    stack: Stack,
    source: StackSource,
    fused: np.ndarray,
    weights: np.ndarray | None,
    *,
    options: OutputOptions,
    paths: list[Path],
    out_dir: Path,
    stack_options: StackOptions,
    t0: float,
    merged: tuple[np.ndarray, list[float]] | None = None,
) -> Result:
    """Write one fused stack's outputs (the writer thread) -> its summary row."""
    missing = paths if options.overwrite else [p for p in paths if not p.exists()]
    try:
        write_outputs(stack, source, fused, weights, options=options, paths=paths, only=missing, merged=merged)
    except FuseError as e:
        return Result(source.name, "failed", reason=str(e))
    except OSError as e:
        why = write_error(e, out_dir)
        return Result(source.name, "failed", reason=f"{getattr(e, 'filename', None) or out_dir}: cannot write ({why})")
    result = _fused(stack, source, paths, time.perf_counter() - t0, stack_options)
    result.outputs = [str(p) for p in missing]
    if len(missing) < len(paths):
        kept = ", ".join(p.name for p in paths if p not in missing)
        result.warnings.append(f"{source.name}: kept the existing {kept} (use --overwrite to replace it)")
    return result


def _plan(source: StackSource, out_dir: Path, options: OutputOptions, dry_run: bool) -> Result | None:
    """The result of a stack that needs no fusing (a single shot, failed, planned or skipped), or
    None: fuse it."""
    if source.single:
        return Result(source.name, "single", reason=source.notes[-1] if source.notes else "a single shot")
    if source.error is not None:
        return Result(source.name, "failed", reason=source.error)
    try:
        paths = output_paths(source, out_dir, options)
    except FuseError as e:
        return Result(source.name, "failed", reason=str(e))
    inputs = {f.path.resolve() for f in source.frames}
    clash = [p for p in paths if p.resolve() in inputs]
    outputs = [str(p) for p in paths]
    if clash:
        return Result(source.name, "failed", reason=f"{clash[0]}: the output would replace an input frame")
    if dry_run:
        return Result(source.name, "planned", outputs)
    if not options.overwrite and all(p.exists() for p in paths):
        return Result(source.name, "skipped", outputs, reason="outputs exist (use --overwrite)")
    return None


def _fused(stack: Stack, source: StackSource, paths: Sequence[Path], seconds: float, options: StackOptions) -> Result:
    """The summary row of a fused stack, with its motion and the frames left unaligned."""
    megapixels = stack.frames.shape[-1] * stack.frames.shape[-2] * (4 if stack.kind == "raw" else 1) / 1e6
    warnings = [f"{source.name}: {n.removeprefix('warning: ')}" for n in stack.notes if n.startswith("warning: ")]
    warnings += [
        f"{source.name}: frame {m.frame + 1} ({stack.infos[m.frame].path.name}) fused unaligned: {m.reason}"
        for m in stack.motion
        if m.status == "unaligned" and options.align != "none"
    ]
    return Result(
        source.name,
        "fused",
        [str(p) for p in paths],
        seconds=seconds,
        megapixels=megapixels,
        motion=[m.to_dict() for m in stack.motion],
        warnings=warnings,
        notes=[
            *(n for n in stack.notes if not n.startswith("warning: ")),  # the source's notes among them
            *([f"colour: read and written in {stack.space.name}"] if stack.space else []),
        ],
    )
