"""Training data: labelled stacks decoded once and cached, brackets synthesised in memory, random
crops that are a pure function of (seed, index), and the per-step batches of every rank.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from fusecli.errors import FuseError
from fusecli.io.common import write_error


@dataclass
class DataConfig:
    datasets: list[str] = field(default_factory=list)  # folders of labelled stacks
    val: list[str] = field(default_factory=list)  # held-out folders (else val_fraction of datasets)
    val_fraction: float = 0.1
    synth_radiance: list[str] = field(default_factory=list)  # radiance maps to synthesise from
    synth_procedural: int = 0  # procedural brackets to add
    synth_per_map: int = 8  # brackets per radiance map
    synth_size: int = 256  # mosaic side of synthesised brackets (packed: half)
    synth_val: int = 8  # held-out synthesised brackets (other seeds), when there is no val folder
    val_radiance: list[str] = field(default_factory=list)  # radiance maps only for validation
    display_radiance: list[str] = field(default_factory=list)  # maps for display-referred RGB brackets
    display_per_map: int = 8  # display-referred brackets per map (synth.render_display_bracket)
    display_procedural: int = 0
    display_size: int = 256
    display_frames: list[int] = field(default_factory=lambda: [3])  # K of the display-referred brackets
    display_val: int = 8  # held-out display-referred brackets (from val_radiance, other seeds)
    crop: int = 96  # training crop side, packed pixels
    workers: int = 0  # DataLoader worker processes

    def __post_init__(self) -> None:
        from fusecli.config import check_ranges

        counts = ("synth_procedural", "synth_per_map", "synth_val", "display_per_map", "display_procedural")
        ranges = {k: (0, None) for k in (*counts, "display_val", "workers")}
        sizes = {k: (16, 8192) for k in ("synth_size", "display_size", "crop")}
        check_ranges(self, "data", {**ranges, **sizes, "val_fraction": (0, 0.9)})
        if any(k < 2 for k in self.display_frames):
            raise FuseError(f"data.display_frames = {self.display_frames}: a bracket has at least 2 frames")


@dataclass
class Sample:
    """One labelled stack in memory (or memory-mapped): frames (K, C, H, W), ratios (K,), label (C, H, W)."""

    name: str
    frames: np.ndarray
    ratios: np.ndarray
    label: np.ndarray
    reference: int = 0  # the normal exposure (the seed's brackets: the 1/1 frame)
    display: bool = False  # decoded from display-referred files (camera JPEG/PNG), not scene-referred


def _cache_key(paths: Sequence[Path]) -> str:
    h = hashlib.sha1()
    for p in sorted(map(str, paths)):
        st = os.stat(p)
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def load_labelled(folders: Sequence[str], cache: Path | None) -> list[Sample]:
    """Decode every labelled stack of the folders once; later runs memory-map the cached .npy files."""
    from fusecli.discover import discover
    from fusecli.stack import load_stack

    if not folders:
        return []
    sources = discover([Path(f) for f in folders])
    labelled = [s for s in sources if s.label is not None and not s.single]
    if not labelled:
        raise FuseError(
            f"{', '.join(folders)}: no stack has a label (label.* beside its frames); training needs labelled stacks"
        )
    samples = []
    for source in labelled:
        key = _cache_key([f.path for f in source.frames] + [source.label])
        files = [cache / f"{source.name}-{key}.{part}.npy" for part in ("frames", "label", "ratios")] if cache else []
        if files and all(f.exists() for f in files):
            frames, label, ratios = (np.load(f, mmap_mode="r") for f in files)
        else:
            stack = load_stack(source)
            frames, label, ratios = stack.frames, stack.read_label(), np.asarray(stack.ratios, np.float32)
            if files:
                cache.mkdir(parents=True, exist_ok=True)
                for f, array in zip(files, (frames, label, ratios)):
                    tmp = f.with_name(f".{f.stem}.{os.getpid()}.part.npy")  # DDP ranks may write at once
                    try:
                        np.save(tmp, array)
                        os.replace(tmp, f)
                    except OSError as e:
                        tmp.unlink(missing_ok=True)
                        raise FuseError(f"{f}: cannot write the training cache ({write_error(e, cache)})") from None
        samples.append(Sample(source.name, frames, ratios, label))
    return samples


def synth_samples(radiance: Sequence[str], per_map: int, procedural: int, size: int, seed: int) -> list[Sample]:
    """Brackets synthesised in memory from radiance maps and procedural scenes (see fusecli.synth)."""
    from fusecli.io.image import read_radiance
    from fusecli.io.raw import pack_bayer
    from fusecli.synth import SynthConfig, procedural_scene, render_bracket

    cfg = SynthConfig(width=size, height=size)
    samples = []
    jobs = [(Path(p), i) for p in radiance for i in range(per_map)] + [(None, i) for i in range(procedural)]
    maps = {p: read_radiance(p) for p in {p for p, _ in jobs if p is not None}}
    for n, (path, i) in enumerate(jobs):
        rng = np.random.default_rng([seed, n])
        scene = maps[path] if path is not None else procedural_scene(size, size, rng)
        b = render_bracket(scene, cfg, rng, source=path.name if path else "procedural")
        black, white = b.camera.black_level[0], b.camera.white_level
        frames = np.stack(
            [
                np.clip((pack_bayer(m, b.camera.cfa).astype(np.float32) - black) / (white - black), 0, 1)
                for m in b.mosaics
            ]
        )
        name = f"{path.stem if path else 'procedural'}#{i}"
        samples.append(Sample(name, frames, np.asarray(cfg.ratios, np.float32), b.label))
    return samples


def display_samples(
    radiance: Sequence[str], per_map: int, procedural: int, *, size: int, frames: Sequence[int], seed: int
) -> list[Sample]:
    """Display-referred RGB brackets synthesised in memory (see fusecli.synth.render_display_bracket):
    ``per_map`` per radiance map for every K of ``frames``, and ``procedural`` procedural scenes."""
    from fusecli.io.image import read_radiance
    from fusecli.synth import DisplayConfig, procedural_scene, render_display_bracket

    samples = []
    jobs = [(Path(p), i, k) for k in frames for p in radiance for i in range(per_map)]
    jobs += [(None, i, k) for k in frames for i in range(procedural)]
    maps = {p: read_radiance(p) for p in {p for p, _, _ in jobs if p is not None}}
    for n, (path, i, k) in enumerate(jobs):
        rng = np.random.default_rng([seed, 7, n])
        scene = maps[path] if path is not None else procedural_scene(2 * size, 2 * size, rng)
        b = render_display_bracket(scene, DisplayConfig(size=size, frames=k), rng)
        name = f"{path.stem if path else 'procedural'}#display{k}.{i}"
        samples.append(Sample(name, b.frames, b.ratios, b.label, b.reference, display=True))
    return samples


def _kind(s: Sample) -> tuple[int, int, bool]:
    return s.frames.shape[0], s.frames.shape[1], s.display


class CropDataset(Dataset):
    """Random crops with flips (and transposes of square crops) of labelled stacks. Item ``i`` is a
    pure function of (seed, i): any process, worker or resumed run draws the same samples. Stacks
    of one kind (K, C) make a pool; the items of one step (``batch`` consecutive indices) all come
    from one pool, the pools taking turns, so every batch stacks."""

    def __init__(self, samples: Sequence[Sample], crop: int, seed: int, batch: int = 1) -> None:
        self.crop, self.seed, self.batch = crop, seed, batch
        kinds = sorted({_kind(s) for s in samples})
        self.pools = [[s for s in samples if _kind(s) == kind] for kind in kinds]

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        pool = self.pools[(index // self.batch) % len(self.pools)]
        s = pool[int(torch.randint(len(pool), (1,), generator=g))]
        h, w = s.label.shape[-2:]
        ch, cw = min(self.crop, h), min(self.crop, w)
        y = int(torch.randint(h - ch + 1, (1,), generator=g))
        x = int(torch.randint(w - cw + 1, (1,), generator=g))
        frames = torch.from_numpy(np.array(s.frames[..., y : y + ch, x : x + cw]))
        label = torch.from_numpy(np.array(s.label[..., y : y + ch, x : x + cw]))
        flip = torch.randint(2, (3,), generator=g).tolist()
        if flip[0]:
            frames, label = frames.flip(-1), label.flip(-1)
        if flip[1]:
            frames, label = frames.flip(-2), label.flip(-2)
        if flip[2] and ch == cw:
            frames, label = frames.transpose(-1, -2), label.transpose(-1, -2)
        reference = torch.tensor(s.reference, dtype=torch.long)
        display = torch.tensor(float(s.display))
        return frames.contiguous(), torch.from_numpy(np.array(s.ratios)), label.contiguous(), reference, display


class StepBatches(Sampler):
    """Batch indices of steps ``start`` .. ``steps - 1``; rank r of w takes its slice of each step."""

    def __init__(self, start: int, steps: int, batch: int, rank: int = 0, world: int = 1) -> None:
        self.start, self.steps, self.batch, self.rank, self.world = start, steps, batch, rank, world

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.steps):
            base = (step * self.world + self.rank) * self.batch
            yield list(range(base, base + self.batch))

    def __len__(self) -> int:
        return max(0, self.steps - self.start)


def _check_labels(samples: Sequence[Sample]) -> None:
    for s in samples:
        if s.label.shape != s.frames.shape[1:]:
            raise FuseError(f"{s.name}: label {s.label.shape} does not match its frames {s.frames.shape[1:]}")


def build_datasets(d: DataConfig, seed: int, cache: Path | None) -> tuple[list[Sample], list[Sample]]:
    """Training and validation samples: labelled folders (a fraction held out when no --val is
    given) and brackets synthesised in memory, checked to be of one K and C."""
    train = load_labelled(d.datasets, cache)
    val = load_labelled(d.val, cache)
    if train and not val and d.val_fraction > 0 and len(train) > 1:
        order = np.random.default_rng(seed).permutation(len(train))
        n_val = max(1, int(round(len(train) * d.val_fraction)))
        val = [train[i] for i in order[:n_val]]
        train = [train[i] for i in order[n_val:]]
    if d.synth_radiance or d.synth_procedural:
        train += synth_samples(d.synth_radiance, d.synth_per_map, d.synth_procedural, d.synth_size, seed)
        if not val and d.synth_val:
            maps = d.val_radiance or d.synth_radiance
            per_map = max(1, d.synth_val // (len(maps) + 1)) if maps else 0
            val = synth_samples(maps, per_map, max(1, d.synth_val - per_map * len(maps)), d.synth_size, seed + 10_000)
    if d.display_radiance or d.display_procedural:
        train += display_samples(
            d.display_radiance,
            d.display_per_map,
            d.display_procedural,
            size=d.display_size,
            frames=d.display_frames,
            seed=seed,
        )
        if d.display_val and d.val_radiance:
            per_map = max(1, d.display_val // len(d.val_radiance))
            val += display_samples(
                d.val_radiance, per_map, 0, size=d.display_size, frames=d.display_frames[:1], seed=seed + 10_000
            )
    if not train:
        raise FuseError(
            "nothing to train on: give dataset folders of labelled stacks, or radiance maps / procedural "
            "scenes to synthesise"
        )
    _check_labels(train + val)
    return train, val
