"""Training FuseNet with the seed's loss: configuration, data, the loop, checkpoints.

The loop is deterministic by construction, so that a run killed at any moment and resumed reaches
the same weights as an uninterrupted one (on CPU): every batch is a pure function of (seed, step,
rank) (:class:`CropDataset` seeds its generator from the sample index), the learning rate is a
function of the step, and a checkpoint holds the model, the optimiser and the step, written to a
temporary file and renamed.

Run folder: ``config.json`` (the effective configuration), ``log.jsonl`` (every loss term of every
step, and validations), ``last.pt`` and ``best.pt`` (by validation loss), ``cache/`` (decoded
stacks as .npy, memory-mapped after the first run).

Multi-GPU / multi-machine: start it with ``torchrun --nproc_per_node=N -m fusecli train ...``;
each process takes its own slice of every step's samples, DistributedDataParallel averages the
gradients, and rank 0 logs and saves (gloo on CPU, NCCL on CUDA).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import tomllib
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from fusecli import config
from fusecli.errors import FuseError
from fusecli.losses import FusionLoss, LossConfig
from fusecli.metrics import psnr, ssim
from fusecli.model import FuseNet, ModelConfig, save_model
from fusecli.runtime import pick_device


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay to ``min_lr_ratio * lr``."""

    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 50
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0


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
    crop: int = 96  # training crop side, packed pixels
    workers: int = 0  # DataLoader worker processes


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    steps: int = 1000
    batch_size: int = 8
    seed: int = 0
    val_every: int = 100
    ckpt_every: int = 50
    log_every: int = 10
    device: str = "auto"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "configuration") -> "TrainConfig":
        """Tables [model], [loss], [optim], [data] and [train] (or the [train] keys at the top level)."""
        parts = {"model": ModelConfig, "loss": LossConfig, "optim": OptimConfig, "data": DataConfig}
        flat = {k: v for k, v in data.items() if k not in parts and k != "train"}
        flat.update(data.get("train", {}))
        cfg = config.from_dict(cls, flat, source, "train")
        for key, sub in parts.items():
            if key in data:
                setattr(cfg, key, config.from_dict(sub, data[key], source, key))
        if cfg.steps < 1 or cfg.batch_size < 1 or cfg.data.crop < 16:
            raise FuseError(f"{source}: steps and batch_size must be >= 1 and crop >= 16")
        return cfg

    @classmethod
    def from_toml(cls, path: Path) -> "TrainConfig":
        return cls.from_dict(config.read_toml(path), source=str(path))


def apply_overrides(cfg: TrainConfig, overrides: Sequence[str] = (), values: dict | None = None) -> TrainConfig:
    """A new configuration with ``values`` ({"optim.lr": 1e-3, ...}, typed values from CLI flags)
    and ``section.key=value`` overrides (TOML values: 2e-3, true, "text", [1, 2]) applied, checked
    as a whole before anything uses it."""
    data = cfg.to_dict()
    items = [(key, value, f"--{key}") for key, value in (values or {}).items()]
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise FuseError(f"--set {item!r}: expected section.key=value, e.g. optim.lr=1e-3")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # a bare word: take it as text
        items.append((key, value, f"--set {item!r}"))
    for key, value, label in items:
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            if not isinstance(node.get(p), dict):
                raise FuseError(f"{label}: no configuration section {p!r}")
            node = node[p]
        if leaf not in node:
            raise FuseError(f"{label}: unknown setting {key!r}")
        node[leaf] = value
    return TrainConfig.from_dict(data, source="--set")


def configure(
    run: Path | None, resume: Path | None, config_file: Path | None, values: dict, overrides: Sequence[str]
) -> tuple[TrainConfig, Path]:
    """The configuration and run folder of ``train``: a new run's (``config_file`` or the defaults)
    or, with ``resume``, the one saved in that run's checkpoint; then ``values`` and ``overrides``
    (:func:`apply_overrides`). Everything is checked here, before anything is written."""
    if resume is not None:
        if run is not None and run != resume:
            raise FuseError("--resume RUN continues RUN: do not give another --run-dir")
        run = resume
        cfg = TrainConfig.from_dict(load_checkpoint(resume)["config"], source=str(resume / "last.pt"))
    else:
        if run is None:
            raise FuseError("--run-dir DIR is required: the folder for the configuration, log and checkpoints")
        cfg = TrainConfig.from_toml(config_file) if config_file else TrainConfig()
    return apply_overrides(cfg, overrides, values), run


# --- data ---------------------------------------------------------------------------------------


@dataclass
class Sample:
    """One labelled stack in memory (or memory-mapped): frames (K, C, H, W), ratios (K,), label (C, H, W)."""

    name: str
    frames: np.ndarray
    ratios: np.ndarray
    label: np.ndarray


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
    labelled = [s for s in sources if s.label is not None]
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
                    np.save(tmp, array)
                    os.replace(tmp, f)
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


class CropDataset(Dataset):
    """Random crops with flips (and transposes of square crops) of labelled stacks. Item ``i`` is a
    pure function of (seed, i): any process, worker or resumed run draws the same samples."""

    def __init__(self, samples: Sequence[Sample], crop: int, seed: int) -> None:
        self.samples, self.crop, self.seed = list(samples), crop, seed

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        s = self.samples[int(torch.randint(len(self.samples), (1,), generator=g))]
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
        return frames.contiguous(), torch.from_numpy(np.array(s.ratios)), label.contiguous()


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


def _check_uniform(samples: Sequence[Sample], what: str) -> None:
    shapes = {(s.frames.shape[0], s.frames.shape[1]) for s in samples}
    if len(shapes) > 1:
        raise FuseError(f"{what}: stacks of different K or C ({sorted(shapes)}); train on stacks of one kind")
    for s in samples:
        if s.label.shape != s.frames.shape[1:]:
            raise FuseError(f"{s.name}: label {s.label.shape} does not match its frames {s.frames.shape[1:]}")


def build_datasets(cfg: TrainConfig, cache: Path | None) -> tuple[list[Sample], list[Sample]]:
    d = cfg.data
    train = load_labelled(d.datasets, cache)
    val = load_labelled(d.val, cache)
    if train and not val and d.val_fraction > 0 and len(train) > 1:
        order = np.random.default_rng(cfg.seed).permutation(len(train))
        n_val = max(1, int(round(len(train) * d.val_fraction)))
        val = [train[i] for i in order[:n_val]]
        train = [train[i] for i in order[n_val:]]
    if d.synth_radiance or d.synth_procedural:
        train += synth_samples(d.synth_radiance, d.synth_per_map, d.synth_procedural, d.synth_size, cfg.seed)
        if not val and d.synth_val:
            maps = d.val_radiance or d.synth_radiance
            per_map = max(1, d.synth_val // (len(maps) + 1)) if maps else 0
            val = synth_samples(
                maps, per_map, max(1, d.synth_val - per_map * len(maps)), d.synth_size, cfg.seed + 10_000
            )
    if not train:
        raise FuseError(
            "nothing to train on: give dataset folders of labelled stacks, or radiance maps / procedural "
            "scenes to synthesise"
        )
    _check_uniform(train + val, "training data")
    return train, val


# --- the loop -----------------------------------------------------------------------------------


def lr_at(step: int, cfg: TrainConfig) -> float:
    o = cfg.optim
    if step < o.warmup:
        return o.lr * (step + 1) / o.warmup
    progress = (step - o.warmup) / max(1, cfg.steps - o.warmup)
    return o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


@torch.no_grad()
def validate(model: torch.nn.Module, samples: Sequence[Sample], loss_fn: FusionLoss, device: torch.device) -> dict:
    """Mean loss terms, PSNR and SSIM over whole held-out stacks (batch 1)."""
    model.eval()
    sums: dict[str, float] = {}
    for s in samples:
        frames = torch.from_numpy(np.array(s.frames))[None].to(device)
        ratios = torch.from_numpy(np.array(s.ratios))[None].to(device)
        label = torch.from_numpy(np.array(s.label))[None].to(device)
        fused, weights = model(frames, ratios)
        total, terms = loss_fn(fused, label, frames, weights)
        values = {"total": total, **terms, "psnr": psnr(fused, label), "ssim": ssim(fused, label)}
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + float(v)
    model.train()
    return {k: v / len(samples) for k, v in sums.items()}


def _save(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".pt.part")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(run: Path, which: str = "last") -> dict:
    path = Path(run) / f"{which}.pt"
    if not path.is_file():
        raise FuseError(f"{run}: no checkpoint ({path.name}) to resume from")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise FuseError(f"{path}: unreadable checkpoint ({e})") from None


def _dist() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _open_run(cfg: TrainConfig, run: Path, resume: bool, write: bool) -> dict | None:
    """Check the run folder against the configuration before anything is written there; then
    (``write``: rank 0) write ``config.json`` -> the checkpoint to resume from, or None."""
    ckpt = None
    if resume:
        ckpt = load_checkpoint(run)
        saved = TrainConfig.from_dict(ckpt["config"], source=str(run / "last.pt"))
        if asdict(saved.model) != asdict(cfg.model):
            raise FuseError(
                f"{run}: its checkpoint is of another architecture ({asdict(saved.model)}) than the "
                "configuration asks for"
            )
    elif (run / "last.pt").exists():
        raise FuseError(
            f"{run}: already holds a training run; resume it with --resume {run} or choose another --run-dir"
        )
    if write:
        try:
            run.mkdir(parents=True, exist_ok=True)
            (run / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        except OSError as e:
            raise FuseError(f"{run}: cannot write the run folder ({e.strerror})") from None
    return ckpt


def _setup(cfg: TrainConfig, world: int, ckpt: dict | None):
    """The device, model and optimiser of a run (restored from ``ckpt`` when resuming) -> (device,
    model, optimizer, first step, best validation loss so far)."""
    device = pick_device(cfg.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    torch.manual_seed(cfg.seed)
    model = FuseNet(cfg.model).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    if ckpt is None:
        return device, model, optimizer, 0, math.inf
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    return device, model, optimizer, int(ckpt["step"]), float(ckpt["best_val"])


def train(
    cfg: TrainConfig,
    run: Path,
    resume: bool = False,
    export: Path | None = None,
    on_step: Callable[[int, dict], None] | None = None,
) -> dict:
    """Train (or resume) in the run folder; returns the last validation (or training) figures."""
    run = Path(run)
    rank, world = _dist()
    ckpt = _open_run(cfg, run, resume, write=rank == 0)

    device, model, optimizer, start, best = _setup(cfg, world, ckpt)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    loss_fn = FusionLoss(cfg.loss)

    train_set, val_set = build_datasets(cfg, run / "cache")
    loader = DataLoader(
        CropDataset(train_set, cfg.data.crop, cfg.seed),
        batch_sampler=StepBatches(start, cfg.steps, cfg.batch_size, rank, world),
        num_workers=cfg.data.workers,
        pin_memory=device.type == "cuda",
    )
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    )
    log = open(run / "log.jsonl", "a") if rank == 0 else None

    def checkpoint(step: int, which: str = "last") -> None:
        if rank == 0:
            _save(
                run / f"{which}.pt",
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "step": step,
                    "best_val": best,
                    "config": cfg.to_dict(),
                },
            )

    last_val: dict = {}
    done = start  # steps completed (the optimiser has stepped)
    t0, seen = time.perf_counter(), 0
    try:
        for step, (frames, ratios, label) in zip(range(start, cfg.steps), loader):
            frames, ratios, label = (t.to(device, non_blocking=True) for t in (frames, ratios, label))
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, cfg)
            with autocast:
                fused, weights = net(frames, ratios)
            total, terms = loss_fn(fused.float(), label, frames, weights.float())
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            done = step + 1
            seen += frames.shape[0] * world
            logged = torch.stack([total.detach(), *(v.detach().float() for v in terms.values())])
            if world > 1:  # log the mean over every rank's share of the batch
                dist.all_reduce(logged)
                logged /= world
            values = logged.tolist()
            record = {"step": done, "lr": lr_at(step, cfg), "total": values[0], **dict(zip(terms, values[1:]))}
            record["samples_per_s"] = seen / max(1e-9, time.perf_counter() - t0)
            if val_set and (done % cfg.val_every == 0 or done == cfg.steps) and rank == 0:
                last_val = validate(model, val_set, loss_fn, device)
                record["val"] = last_val
                if last_val["total"] < best:
                    best = last_val["total"]
                    checkpoint(done, "best")
            if done % cfg.ckpt_every == 0 or done == cfg.steps:
                checkpoint(done)
            if log is not None:
                log.write(json.dumps(record) + "\n")
                log.flush()
            if on_step is not None and rank == 0:
                on_step(done, record)
    except KeyboardInterrupt:
        checkpoint(done)  # Ctrl-C: keep every completed step, then let the CLI exit cleanly
        raise
    finally:
        if log is not None:
            log.close()
    if export is not None and rank == 0:
        export_model(run, export, cfg)
    if world > 1:
        dist.barrier()
        # Tear the process group down before the interpreter exits: gloo's threads still running at
        # exit ended a rank with "terminate called without an active exception" (SIGABRT) in about
        # 1 run in 9.
        dist.destroy_process_group()
    return last_val


def export_model(run: Path, path: Path, cfg: TrainConfig | None = None) -> tuple[Path, Path]:
    """Write the run's best checkpoint (else its last) as a model file, with what made it."""
    run = Path(run)
    ckpt = load_checkpoint(run, "best" if (run / "best.pt").exists() else "last")
    cfg = cfg or TrainConfig.from_dict(ckpt["config"])
    model = FuseNet(cfg.model)
    model.load_state_dict(ckpt["model"])
    val = {}
    log = run / "log.jsonl"
    if log.exists():
        for line in log.read_text().splitlines():
            record = json.loads(line)
            if "val" in record and record["step"] == ckpt["step"]:
                val = record["val"]
    meta = {
        "loss": asdict(cfg.loss),
        "training": {
            "data": asdict(cfg.data),
            "steps": ckpt["step"],
            "batch_size": cfg.batch_size,
            "optim": asdict(cfg.optim),
            "seed": cfg.seed,
        },
        "validation": val,
    }
    return save_model(path, model, meta)
