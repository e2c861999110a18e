"""fusecli's command line: thin Typer commands that parse options and call library code.

User errors (:class:`fusecli.errors.FuseError`) become one line on stderr and exit code 1 here, and
only here. Usage errors (a bad option) are Click's, exit code 2.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Iterator, List, Optional

import typer

from fusecli import __version__
from fusecli.errors import FuseError
from fusecli.runtime import keep_freed_memory

app = typer.Typer(
    help="HDR fusion of exposure brackets (camera RAW or TIFF/PNG/JPEG stacks) with a learned fusion network.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_USER_ERROR = 1
EXIT_NOT_IMPLEMENTED = 2


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a FuseError into its one-line message on stderr and exit code 1."""
    try:
        yield
    except FuseError as e:
        typer.echo(f"fusecli: error: {e}", err=True)
        raise typer.Exit(EXIT_USER_ERROR) from None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fusecli {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """fusecli: fuse exposure brackets into one image."""


def _parse_ratios(text: Optional[str]) -> Optional[list[float]]:
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise FuseError(f"--ratios {text!r}: expected comma-separated numbers such as 1,0.25,0.0625") from None
    return values


def _seconds(t: float | None) -> str:
    if t is None:
        return "?"
    if t < 1 and abs(1 / t - round(1 / t)) < 0.01 * (1 / t):
        return f"1/{round(1 / t)}"
    return f"{t:g}"


@app.command()
def inspect(
    paths: List[Path] = typer.Argument(..., help="Stack folders, folders of stacks, flat folders of photos, or files."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    group_size: Optional[int] = typer.Option(None, "--group-size", help="Split flat folders into brackets of N frames."),
    ratios: Optional[str] = typer.Option(None, "--ratios", help="Exposure ratios, brightest first, e.g. 1,0.25,0.0625 (overrides metadata)."),
    transfer: str = typer.Option("auto", "--transfer", help="Transfer of non-RAW frames: auto, srgb or linear."),
) -> None:
    """Show the stacks found in PATHS: frames, exposures, ratios and where they came from."""
    from fusecli.stack import describe, discover

    with user_errors():
        if transfer not in ("auto", "srgb", "linear"):
            raise FuseError(f"--transfer {transfer!r}: expected auto, srgb or linear")
        user_ratios = _parse_ratios(ratios)
        sources = discover(paths, group_size=group_size)
    rows, failed = [], 0
    for source in sources:
        try:
            rows.append(describe(source, user_ratios, transfer))  # type: ignore[arg-type]
        except FuseError as e:
            failed += 1
            rows.append({"name": source.name, "error": str(e), "frames": [{"path": str(f.path)} for f in source.frames]})
            typer.echo(f"fusecli: error: {e}", err=True)
    if as_json:
        typer.echo(json.dumps({"stacks": rows, "failed": failed}, indent=2))
    else:
        _print_stack_table(rows)
    if failed:
        raise typer.Exit(EXIT_USER_ERROR)


def _print_stack_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{len(rows)} stack(s)")
    for col in ("stack", "frame", "exposure s", "ratio", "from", "size", "CFA", "label"):
        table.add_column(col, overflow="fold", no_wrap=col in ("frame", "exposure s", "ratio", "from"))
    for r in rows:
        if "error" in r:
            table.add_row(escape(r["name"]), "", "", "", "[red]failed[/red]", "", "", "", end_section=True)
            continue
        for j, f in enumerate(r["frames"]):
            first = j == 0
            table.add_row(
                escape(r["name"]) if first else "",
                escape(Path(f["path"]).name + (f"[{f['page']}]" if f["page"] is not None else "")),
                _seconds(f["exposure_time"]),
                f"{f['ratio']:.4g}",
                r["ratio_source"] if first else "",
                f"{r['width']}x{r['height']}x{r['channels']}" if first else "",
                (r["cfa"] or "-") if first else "",
                ("yes" if r["label"] else "no") if first else "",
                end_section=j == len(r["frames"]) - 1,
            )
    console = Console()
    console.print(table)
    for r in rows:
        for note in r.get("notes", []):
            console.print(f"{escape(r['name'])}: {escape(note)}")
        if "error" in r:
            console.print(f"[red]{escape(r['name'])}: {escape(r['error'])}[/red]")


def _not_implemented(command: str) -> None:
    typer.echo(f"fusecli {command}: not implemented yet", err=True)
    raise typer.Exit(EXIT_NOT_IMPLEMENTED)


@app.command()
def synth(
    radiance: List[Path] = typer.Argument(None, help="HDR radiance maps (.exr, .hdr) to synthesise brackets from."),
    out: Path = typer.Option(..., "-o", "--out", help="Folder that receives one stack folder per bracket."),
    stacks: int = typer.Option(1, "--stacks", min=1, help="Brackets per radiance map (different crops, noise, CFA)."),
    procedural: int = typer.Option(0, "--procedural", min=0, help="Brackets of procedural scenes to add."),
    size: str = typer.Option("512x384", "--size", help="Mosaic size WxH (even)."),
    ratios: str = typer.Option("1,0.25,0.0625", "--ratios", help="Exposure ratios, brightest first."),
    cfa: Optional[str] = typer.Option(None, "--cfa", help="CFA phase (RGGB, BGGR, GRBG, GBRG); random per stack if not given."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives the same files."),
) -> None:
    """Synthesise RAW brackets (DNG) with labels from real radiance maps and procedural scenes."""
    from fusecli.synth import SynthConfig, synthesise

    with user_errors():
        try:
            width, height = (int(v) for v in size.lower().split("x"))
        except ValueError:
            raise FuseError(f"--size {size!r}: expected WIDTHxHEIGHT such as 512x384") from None
        cfg = SynthConfig(width=width, height=height, ratios=tuple(_parse_ratios(ratios) or ()), cfa=cfa)
        written = synthesise(radiance or [], out, stacks_per_map=stacks, procedural=procedural, cfg=cfg, seed=seed)
    for folder in written:
        typer.echo(str(folder))


@app.command()
def train(
    datasets: List[Path] = typer.Argument(None, help="Folders of stacks with labels (label.* beside the frames)."),
    run: Optional[Path] = typer.Option(None, "--run-dir", help="Run folder: config, log.jsonl, checkpoints, cache."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML configuration ([model], [loss], [optim], [data], [train])."),
    val: List[Path] = typer.Option([], "--val", help="Held-out folder(s) of labelled stacks (default: a fraction of the datasets)."),
    synth: List[Path] = typer.Option([], "--synth", help="Radiance maps (.exr/.hdr) to synthesise training brackets from."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Total optimiser steps."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate (AdamW)."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda."),
    workers: Optional[int] = typer.Option(None, "--workers", help="DataLoader worker processes."),
    overrides: List[str] = typer.Option([], "--set", help="Any setting as section.key=value, e.g. loss.gamma=20."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this folder from its last checkpoint."),
    export: Optional[Path] = typer.Option(None, "--export", help="Write the trained model (best checkpoint) as PATH.safetensors + PATH.json."),
) -> None:
    """Train the fusion network on labelled stacks (or brackets synthesised from radiance maps)."""
    from fusecli.train import TrainConfig, apply_overrides, load_checkpoint, train as run_training

    with user_errors():
        if resume is not None:
            if run is not None and run != resume:
                raise FuseError("--resume RUN continues RUN: do not give another --run-dir")
            run = resume
            cfg = TrainConfig.from_dict(load_checkpoint(resume)["config"], source=str(resume / "last.pt"))
        else:
            if run is None:
                raise FuseError("--run-dir DIR is required: the folder for the configuration, log and checkpoints")
            cfg = TrainConfig.from_toml(config) if config else TrainConfig()
        flags = {"steps": steps, "batch_size": batch_size, "optim.lr": lr, "seed": seed, "device": device, "data.workers": workers}
        sets = [f"{k}={json.dumps(v)}" for k, v in flags.items() if v is not None]
        if datasets:
            sets.append(f"data.datasets={json.dumps([str(p) for p in datasets])}")
        if val:
            sets.append(f"data.val={json.dumps([str(p) for p in val])}")
        if synth:
            sets.append(f"data.synth_radiance={json.dumps([str(p) for p in synth])}")
        cfg = apply_overrides(cfg, sets + list(overrides))
        try:
            summary = _train_with_progress(run_training, cfg, run, resume is not None, export)
        except KeyboardInterrupt:
            typer.echo(f"fusecli train: interrupted; checkpoint saved, continue with: fusecli train --resume {run}", err=True)
            raise typer.Exit(130) from None
    if summary:
        typer.echo(json.dumps({"validation": summary}))


def _train_with_progress(run_training, cfg, run: Path, resume: bool, export: Optional[Path]) -> dict:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    columns = (TextColumn("step {task.completed}/{task.total}"), BarColumn(), TextColumn("{task.fields[info]}"), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not console.is_terminal) as progress:
        task = progress.add_task("train", total=cfg.steps, info="")

        def on_step(step: int, record: dict) -> None:
            info = f"loss {record['total']:.4f}  l1 {record['l1']:.4f}  {record['samples_per_s']:.1f} samples/s"
            if "val" in record:
                info += f"  val {record['val']['total']:.4f} psnr {record['val']['psnr']:.2f}"
                if not console.is_terminal:
                    console.print(f"step {step}: {info}")
            progress.update(task, completed=step, info=info)

        return run_training(cfg, run, resume=resume, export=export, on_step=on_step)


@app.command()
def fuse(
    paths: List[Path] = typer.Argument(..., help="Stack folders, folders of stacks, flat folders of photos, or files."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder."),
    model: Optional[Path] = typer.Option(None, "--model", help="Model file (default: the bundled one)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (cuda without a GPU is an error)."),
    formats: Optional[str] = typer.Option(None, "--format", help="Comma-separated: dng, tiff, jpg, png (default: dng for RAW, tiff otherwise)."),
    linear: bool = typer.Option(False, "--linear", help="Keep TIFF output of RAW stacks linear (no sRGB curve)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs (they are skipped otherwise)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be fused into which files; write nothing."),
    save_weights: bool = typer.Option(False, "--save-weights", help="Also write NAME_weights.png: which exposure each pixel came from."),
    group_size: Optional[int] = typer.Option(None, "--group-size", help="Split flat folders into brackets of N frames."),
    ratios: Optional[str] = typer.Option(None, "--ratios", help="Exposure ratios, brightest first, e.g. 1,0.25,0.0625."),
    transfer: str = typer.Option("auto", "--transfer", help="Transfer of non-RAW frames: auto, srgb or linear."),
    max_memory: float = typer.Option(1.0, "--max-memory", min=0.001, help="GiB for full-resolution temporaries; larger stacks are fused in bands (same result)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress output."),
) -> None:
    """Fuse each bracket into one image: DNG for RAW stacks, 16-bit TIFF otherwise, plus previews."""
    from fusecli.fuse import FuseOptions, fuse_sources
    from fusecli.model import load_model
    from fusecli.runtime import pick_device
    from fusecli.stack import discover

    with user_errors():
        if transfer not in ("auto", "srgb", "linear"):
            raise FuseError(f"--transfer {transfer!r}: expected auto, srgb or linear")
        aliases = {"jpeg": "jpg", "tif": "tiff"}
        wanted = tuple(aliases.get(f.strip().lower(), f.strip().lower()) for f in formats.split(",")) if formats else None
        if wanted and any(f not in ("dng", "tiff", "jpg", "png") for f in wanted):
            raise FuseError(f"--format {formats!r}: expected a comma-separated list of dng, tiff, jpg, png")
        options = FuseOptions(wanted, linear, overwrite, save_weights, _parse_ratios(ratios), transfer, max_memory)
        sources = discover(paths, group_size=group_size)
        torch_device = pick_device(device)
        net = load_model(model, torch_device)[0] if not dry_run else None
        try:
            results = _fuse_with_progress(fuse_sources, sources, net, torch_device, out, options, dry_run, quiet or as_json)
        except KeyboardInterrupt:
            typer.echo("fusecli fuse: interrupted; finished outputs are complete, the one being written was discarded", err=True)
            raise typer.Exit(130) from None
    if as_json:
        typer.echo(json.dumps({"results": [r.__dict__ for r in results], "failed": sum(r.status == "failed" for r in results)}, indent=2))
    else:
        _print_fuse_summary(results)
    if any(r.status == "failed" for r in results):
        raise typer.Exit(EXIT_USER_ERROR)


def _fuse_with_progress(fuse_sources, sources, net, device, out: Path, options, dry_run: bool, quiet: bool):
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    columns = (TextColumn("{task.completed}/{task.total} stacks"), BarColumn(), TextColumn("{task.fields[rate]}"), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=quiet or not console.is_terminal) as progress:
        task = progress.add_task("fuse", total=len(sources), rate="")
        done = {"mp": 0.0, "s": 0.0}

        def on_result(result) -> None:
            done["mp"] += result.megapixels
            done["s"] += result.seconds
            rate = f"{done['mp'] / done['s']:.1f} MP/s" if done["s"] else ""
            progress.update(task, advance=1, rate=rate)

        return fuse_sources(sources, net, device, out, options, dry_run=dry_run, on_result=on_result)


def _print_fuse_summary(results) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{sum(r.status == 'fused' for r in results)} fused, {sum(r.status == 'skipped' for r in results)} skipped, {sum(r.status == 'failed' for r in results)} failed")
    for col in ("stack", "status", "outputs / reason", "s"):
        table.add_column(col, overflow="fold")
    colour = {"fused": "green", "skipped": "yellow", "failed": "red", "planned": "cyan"}
    for r in results:
        detail = r.reason if r.status in ("failed", "skipped") else "\n".join(Path(o).name for o in r.outputs)
        table.add_row(escape(r.stack), f"[{colour[r.status]}]{r.status}[/]", escape(detail or ""), f"{r.seconds:.2f}" if r.seconds else "")
    Console().print(table)


@app.command("eval")
def evaluate() -> None:
    """Score a model and baselines against held-out labels (not implemented yet)."""
    _not_implemented("eval")


def main() -> None:
    keep_freed_memory()
    app()


if __name__ == "__main__":
    main()
