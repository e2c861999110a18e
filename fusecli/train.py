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

import contextlib
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import tomllib
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from fusecli import config
from fusecli.dataset import CropDataset, DataConfig, Sample, StepBatches, build_datasets
from fusecli.errors import FuseError
from fusecli.io.common import check_writable, write_error
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

    def __post_init__(self) -> None:
        ranges = {"weight_decay": (0, None), "warmup": (0, None), "min_lr_ratio": (0, 1), "grad_clip": (0, None)}
        config.check_ranges(self, "optim", {"lr": (1e-12, 10), **ranges})


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

    def __post_init__(self) -> None:
        every = {"val_every": (1, None), "ckpt_every": (1, None), "log_every": (1, None)}
        config.check_ranges(self, "train", {"steps": (1, None), "batch_size": (1, None), "seed": (0, None), **every})

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
        *parents, leaf = key.removeprefix("train.").split(".")  # [train] keys sit at the top level
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
    cfg = apply_overrides(cfg, overrides, values)
    _check_data(cfg.data)
    pick_device(cfg.device)  # --device cuda without a GPU is refused before the run folder is made
    return cfg, run


def _check_data(d: DataConfig) -> None:
    """A FuseError naming the first data path of the configuration that does not exist."""
    for key in ("datasets", "val", "synth_radiance", "display_radiance", "val_radiance"):
        for path in getattr(d, key):
            if not Path(path).exists():
                needs = (
                    "; the default recipe needs ../shared beside the checkout" if "shared" in Path(path).parts else ""
                )
                raise FuseError(f"{path}: no such file or folder (data.{key}){needs}")


# --- the loop -----------------------------------------------------------------------------------


def lr_at(step: int, cfg: TrainConfig) -> float:
    o = cfg.optim
    if step < o.warmup:
        return o.lr * (step + 1) / o.warmup
    progress = (step - o.warmup) / max(1, cfg.steps - o.warmup)
    return o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


@torch.no_grad()
def validate(model: torch.nn.Module, samples: Sequence[Sample], loss_fn: FusionLoss, device: torch.device) -> dict:
    """Mean loss terms, PSNR and SSIM over whole held-out stacks (batch 1), with the whole learned
    correction: what training learns, whatever share ``display_correction`` gives when fusing."""
    model.eval()
    fusing = model.config
    model.config = replace(fusing, display_correction=1.0)
    sums: dict[str, float] = {}
    try:
        for s in samples:
            frames = torch.from_numpy(np.array(s.frames))[None].to(device)
            ratios = torch.from_numpy(np.array(s.ratios))[None].to(device)
            label = torch.from_numpy(np.array(s.label))[None].to(device)
            reference = torch.tensor([s.reference], device=device)
            display = torch.tensor([float(s.display)], device=device)
            fused, weights = model(frames, ratios, reference, display_referred=display)
            total, terms = loss_fn(fused, label, frames, weights, reference=reference, display=display)
            values = {"total": total, **terms, "psnr": psnr(fused, label), "ssim": ssim(fused, label)}
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + float(v)
    finally:
        model.config = fusing
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
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise FuseError(f"{path}: unreadable checkpoint ({e})") from None
    missing = [
        k for k in ("config", "model", "optimizer", "step", "best_val") if not isinstance(ckpt, dict) or k not in ckpt
    ]
    if missing:
        raise FuseError(f"{path}: not a fusecli training checkpoint (no {', '.join(missing)})")
    return ckpt


def _dist(device: str) -> tuple[int, int]:
    """(rank, world size) under torchrun, the process group joined. Its backend follows the run's
    device, not the machine: NCCL for CUDA, gloo for the CPU (``--device cpu`` where a GPU is)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        cuda = pick_device(device).type == "cuda"
        per_machine = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        if cuda and per_machine > torch.cuda.device_count():
            raise FuseError(
                f"torchrun started {per_machine} processes on a machine with {torch.cuda.device_count()} CUDA "
                f"device(s): use --nproc_per_node {torch.cuda.device_count()}, or --device cpu"
            )
        dist.init_process_group("nccl" if cuda else "gloo")
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
        expected = {k: tuple(v.shape) for k, v in FuseNet(cfg.model).state_dict().items()}
        found = {k: tuple(v.shape) for k, v in ckpt["model"].items()} if isinstance(ckpt["model"], dict) else {}
        if found != expected:
            odd = sorted(set(expected) ^ set(found)) or [k for k in expected if expected[k] != found[k]]
            raise FuseError(f"{run / 'last.pt'}: its weights do not fit the architecture it names ({odd[0]})")
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


@contextlib.contextmanager
def _run_lock(run: Path, rank: int) -> Iterator[bool]:
    """Hold the run folder for this process (rank 0 of a torchrun) while it trains: a second train
    into it is refused -> whether the folder was made here."""
    if rank != 0:
        yield False
        return
    created = not run.exists()
    try:
        run.mkdir(parents=True, exist_ok=True)
        handle = open(run / ".lock", "a")
    except OSError as e:
        raise FuseError(f"{run}: cannot write the run folder ({e.strerror})") from None
    try:
        import fcntl  # (POSIX: elsewhere there is no lock to take)

        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:
        pass
    except OSError:
        handle.close()
        raise FuseError(f"{run}: another fusecli train is running in this run folder") from None
    try:
        yield created
    finally:
        handle.close()


def _start(cfg: TrainConfig, run: Path, resume: bool, world: int, created: bool) -> tuple:
    """The run folder checked (and its configuration written by rank 0), the model and optimiser
    (:func:`_setup`) and the data (:func:`build_datasets`) -> (device, model, optimizer, first step,
    best validation loss, training samples, validation samples). A run that fails to start leaves no
    folder behind (``created``: this process made it)."""
    rank = dist.get_rank() if world > 1 else 0
    try:
        ckpt = _open_run(cfg, run, resume, write=rank == 0)
        return (*_setup(cfg, world, ckpt), *build_datasets(cfg.data, cfg.seed, run / "cache"))
    except BaseException:
        if created:
            shutil.rmtree(run, ignore_errors=True)
        raise


def train(
    cfg: TrainConfig,
    run: Path,
    resume: bool = False,
    export: Path | None = None,
    on_step: Callable[[int, dict], None] | None = None,
) -> dict:
    """Train (or resume) in the run folder; returns the last validation (or training) figures."""
    run = Path(run)
    if export is not None:
        check_writable(Path(export).parent, "model file (--export)")
    rank, world = _dist(cfg.device)
    with _run_lock(run, rank) as created:
        return _train(cfg, run, resume=resume, export=export, on_step=on_step, created=created)


def _train(
    cfg: TrainConfig,
    run: Path,
    *,
    resume: bool,
    export: Path | None,
    on_step: Callable[[int, dict], None] | None,
    created: bool,
) -> dict:
    """The training loop of :func:`train`, in its run folder, which this process holds."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    device, model, optimizer, start, best, train_set, val_set = _start(cfg, run, resume, world, created)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    loss_fn = FusionLoss(cfg.loss)
    loader = DataLoader(
        CropDataset(train_set, cfg.data.crop, cfg.seed, cfg.batch_size),
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
        for step, batch in zip(range(start, cfg.steps), loader):
            # the batch: frames, ratios, label, each stack's reference frame and its domain
            frames, ratios, label, reference, display = (t.to(device, non_blocking=True) for t in batch)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, cfg)
            # forward and loss
            with autocast:
                fused, weights = net(frames, ratios, reference, display_referred=display)
            total, terms = loss_fn(fused.float(), label, frames, weights.float(), reference=reference, display=display)
            # backward and step
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
        # exit can end a rank with "terminate called without an active exception" (SIGABRT).
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
        for line in log.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a killed run can leave a partial last line
                continue
            if isinstance(record, dict) and "val" in record and record.get("step") == ckpt["step"]:
                val = record["val"]
    domains = []
    if cfg.data.synth_radiance or cfg.data.synth_procedural or cfg.data.datasets:
        domains.append("scene-referred: packed-RAW Bayer planes (C = 4), linear (RAW, DNG)")
    if cfg.data.display_radiance or cfg.data.display_procedural:
        domains.append(
            "display-referred: RGB decoded from 8-bit camera JPEG/PNG or converter TIFF through the sRGB curve "
            f"(C = 3, K = {', '.join(map(str, cfg.data.display_frames))}, camera tone curves, JPEG, ratios off by "
            "up to 1/3 EV)"
        )
    meta = {
        "domains": domains,
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
    try:
        return save_model(path, model, meta)
    except OSError as e:
        raise FuseError(f"{path}: cannot write the model ({write_error(e, Path(path).parent)})") from None
