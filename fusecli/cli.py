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
from fusecli.runtime import keep_freed_memory, passive_openmp_threads

app = typer.Typer(
    help="HDR fusion of exposure brackets (camera RAW or TIFF/PNG/JPEG stacks) with a learned fusion network.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_USER_ERROR = 1


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
    align: str = typer.Option("none", "--align", help="Also decode each stack and report each frame's motion: translation or homography."),
) -> None:
    """Show the stacks found in PATHS: frames, exposures, ratios and where they came from."""
    from fusecli.align import check_mode
    from fusecli.stack import describe, discover

    with user_errors():
        if transfer not in ("auto", "srgb", "linear"):
            raise FuseError(f"--transfer {transfer!r}: expected auto, srgb or linear")
        user_ratios = _parse_ratios(ratios)
        check_mode(align)
        sources = discover(paths, group_size=group_size)
    rows, failed = [], 0
    for source in sources:
        try:
            row = describe(source, user_ratios, transfer)  # type: ignore[arg-type]
            if align != "none":
                from fusecli.align import align_stack
                from fusecli.stack import load_stack

                stack = load_stack(source, user_ratios, transfer)  # type: ignore[arg-type]
                row["motion"] = [m.to_dict() for m in align_stack(stack.frames, stack.ratios, align)[1]]  # type: ignore[arg-type]
            rows.append(row)
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
        for m in r.get("motion", [])[1:]:
            console.print(escape(f"{r['name']}: frame {m['frame'] + 1} {motion_text(m)}"), highlight=False)
        if "error" in r:
            console.print(f"[red]{escape(r['name'])}: {escape(r['error'])}[/red]")


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
    shift: float = typer.Option(0.0, "--shift", min=0.0, help="Handheld: move each later frame by up to this many pixels in x and y."),
    rotate: float = typer.Option(0.0, "--rotate", min=0.0, help="Handheld: turn each later frame by up to this many degrees."),
    moving_object: bool = typer.Option(False, "--moving-object", help="Add a small object that moves between frames (a ghost)."),
) -> None:
    """Synthesise RAW brackets (DNG) with labels from real radiance maps and procedural scenes."""
    from fusecli.synth import SynthConfig, synthesise

    with user_errors():
        try:
            width, height = (int(v) for v in size.lower().split("x"))
        except ValueError:
            raise FuseError(f"--size {size!r}: expected WIDTHxHEIGHT such as 512x384") from None
        cfg = SynthConfig(width=width, height=height, ratios=tuple(_parse_ratios(ratios) or ()), cfa=cfa, shift=shift, rotate=rotate, moving_object=moving_object)
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
            _exit_now(130)
    if summary:
        typer.echo(json.dumps({"validation": summary}))
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # A torchrun rank whose work is saved exits at once: C++ threads of the distributed backend
        # still alive in the interpreter's teardown aborted a rank ("terminate called without an
        # active exception") in about 1 run in 18, even after destroy_process_group.
        _exit_now(0)


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
    max_memory: float = typer.Option(0.25, "--max-memory", min=0.001, help="GiB for full-resolution temporaries; larger stacks are fused in bands (same result)."),
    align: str = typer.Option("translation", "--align", help="Register frames onto the reference: none, translation or homography."),
    deghost: bool = typer.Option(True, "--deghost/--no-deghost", help="Where frames disagree after alignment (motion), use the reference frame."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress output."),
) -> None:
    """Fuse each bracket into one image: DNG for RAW stacks, 16-bit TIFF otherwise, plus previews."""
    from fusecli.align import check_mode
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
        check_mode(align)
        options = FuseOptions(wanted, linear, overwrite, save_weights, _parse_ratios(ratios), transfer, max_memory, align, deghost)
        sources = discover(paths, group_size=group_size)
        torch_device = pick_device(device)
        net = load_model(model, torch_device)[0] if not dry_run else None
        try:
            results = _fuse_with_progress(fuse_sources, sources, net, torch_device, out, options, dry_run, quiet or as_json)
        except KeyboardInterrupt:
            from fusecli.fuse import remove_stale_parts

            if not dry_run and out.is_dir():
                remove_stale_parts(out)  # an interrupt inside mkstemp can beat atomic_path's own clean-up
            typer.echo("fusecli fuse: interrupted; finished outputs are complete, the one being written was discarded", err=True)
            _exit_now(130)
    for r in results:
        for warning in r.warnings:
            typer.echo(f"fusecli fuse: warning: {warning}", err=True)
    if as_json:
        typer.echo(json.dumps({"results": [r.__dict__ for r in results], "failed": sum(r.status == "failed" for r in results)}, indent=2))
    else:
        _print_fuse_summary(results)
    if any(r.status == "failed" for r in results):
        raise typer.Exit(EXIT_USER_ERROR)


def _exit_now(code: int) -> None:
    """Exit at once with ``code``, once the interrupted work has cleaned up after itself: the
    interpreter's teardown (torch, OpenMP, worker threads) could otherwise still end the process by
    the default SIGINT handler (seen as exit -2 in about 1 run in 10 under load)."""
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


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


def motion_text(m: dict) -> str:
    """One frame's motion for people: 'aligned: moved 1.23, -0.40 px, turned 0.10 deg'."""
    if m["status"] == "unaligned":
        return f"unaligned: {m['reason']}"
    return f"{m['status']}: moved {m['dx']:.2f}, {m['dy']:.2f} px, turned {m['rotation_deg']:.2f} deg (ECC {m['correlation']:.3f})"


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
        moved = [m for m in r.motion[1:] if m["status"] == "aligned"]
        if moved:
            detail += "\naligned: " + ", ".join(f"#{m['frame'] + 1} {m['dx']:+.1f},{m['dy']:+.1f} px" for m in moved)
        table.add_row(escape(r.stack), f"[{colour[r.status]}]{r.status}[/]", escape(detail or ""), f"{r.seconds:.2f}" if r.seconds else "")
    Console().print(table)


EXIT_THRESHOLD = 3


@app.command("eval")
def evaluate(
    paths: List[Path] = typer.Argument(..., help="Folders of stacks with labels (label.* beside the frames); stacks without one get mef_ssim only."),
    model: Optional[Path] = typer.Option(None, "--model", help="Model file (default: the bundled one)."),
    method: str = typer.Option("model", "--method", help="Comma-separated methods: model, mertens, single, uniform."),
    pred: List[Path] = typer.Option([], "--pred", help="Folder of another tool's outputs (NAME.* or NAME_fused.* per stack); repeatable."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout (nothing else goes to stdout)."),
    as_csv: bool = typer.Option(False, "--csv", help="Print the results as CSV on stdout: one row per stack and method, then the aggregates."),
    per_stack: bool = typer.Option(False, "--per-stack", help="Also show a table row for every stack."),
    fail_under: Optional[str] = typer.Option(None, "--fail-under", help="Exit 3 if the first method's mean is below any of these, e.g. psnr=30,ssim=0.9."),
    fail_over: Optional[str] = typer.Option(None, "--fail-over", help="Exit 3 if the first method's mean is above any of these, e.g. l1=0.02."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write a contact sheet per stack and summary.png into this folder."),
    group_size: Optional[int] = typer.Option(None, "--group-size", help="Split flat folders into brackets of N frames."),
    ratios: Optional[str] = typer.Option(None, "--ratios", help="Exposure ratios, brightest first, e.g. 1,0.25,0.0625."),
    transfer: str = typer.Option("auto", "--transfer", help="Transfer of non-RAW frames: auto, srgb or linear."),
    align: str = typer.Option("translation", "--align", help="Register frames onto the reference before every method: none, translation or homography."),
    deghost: bool = typer.Option(True, "--deghost/--no-deghost", help="Where frames disagree after alignment (motion), use the reference frame."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress output."),
) -> None:
    """Score the model and baselines against held-out labels: the seed's loss terms, PSNR, SSIM, MEF-SSIM.

    Exit codes: 0 all stacks scored (and thresholds met), 1 some stack or method could not be scored
    (reasons in the output), 2 usage error, 3 a --fail-under/--fail-over threshold missed.
    """
    from fusecli import evaluate as ev
    from fusecli.align import check_mode
    from fusecli.losses import LossConfig
    from fusecli.model import load_model
    from fusecli.runtime import pick_device
    from fusecli.stack import discover

    with user_errors():
        if as_json and as_csv:
            raise FuseError("--json and --csv: choose one")
        if transfer not in ("auto", "srgb", "linear"):
            raise FuseError(f"--transfer {transfer!r}: expected auto, srgb or linear")
        methods = tuple(m.strip().lower() for m in method.split(",") if m.strip()) if method else ()
        bad = [m for m in methods if m not in ev.BUILTIN_METHODS]
        if bad or (not methods and not pred):
            raise FuseError(f"--method {method!r}: expected a comma-separated list of {', '.join(ev.BUILTIN_METHODS)}")
        for folder in pred:
            if not folder.is_dir():
                raise FuseError(f"--pred {folder}: not a folder")
        check_mode(align)
        options = ev.EvalOptions(methods, tuple(pred), _parse_ratios(ratios), transfer, align=align, deghost=deghost)
        names = ev.method_names(options)
        thresholds = ev.parse_thresholds(fail_under, "under") + ev.parse_thresholds(fail_over, "over")
        sources = discover(paths, group_size=group_size)
        torch_device = pick_device(device)
        net, sidecar = load_model(model, torch_device)
        loss_config = LossConfig.from_dict(sidecar.get("loss", {}), source=str(model or "the bundled model"))
        rows = _eval_with_progress(ev, sources, net, torch_device, loss_config, options, report, quiet)
        if report is not None:
            from fusecli.report import write_summary_plot

            write_summary_plot(report, rows, names)
    aggregates = ev.aggregate(rows, names)
    checks = ev.check_thresholds(aggregates, names[0], thresholds)
    failed = sum(r["status"] == "failed" for r in rows)
    if as_json:
        typer.echo(json.dumps(_eval_json(model, loss_config, ev.total_formula(loss_config), names, rows, aggregates, checks, failed), indent=2))
    elif as_csv:
        typer.echo(_eval_csv(rows, aggregates), nl=False)
    else:
        _print_eval_tables(rows, aggregates, names, ev, ev.total_formula(loss_config), checks, per_stack)
    if failed:
        raise typer.Exit(EXIT_USER_ERROR)
    if any(not c["passed"] for c in checks):
        raise typer.Exit(EXIT_THRESHOLD)


def _eval_with_progress(ev, sources, net, device, loss_config, options, report: Optional[Path], quiet: bool) -> list[dict]:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    columns = (TextColumn("{task.completed}/{task.total} stacks"), BarColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=quiet or not console.is_terminal) as progress:
        task = progress.add_task("eval", total=len(sources))

        def on_case(case, case_rows, predictions) -> None:
            for r in case_rows:
                if r["status"] == "failed":
                    console.print(f"fusecli eval: {r['stack']} ({r['method']}): {r['reason']}", markup=False, highlight=False)
            if report is not None and case.stack is not None and predictions:
                from fusecli.report import write_contact_sheet

                write_contact_sheet(report, case, predictions, case_rows)
            progress.update(task, advance=1)

        return ev.evaluate_sources(sources, net, device, loss_config, options, on_case=on_case)


def _eval_json(model, loss_config, formula: str, methods, rows, aggregates, checks, failed: int) -> dict:
    return {
        "model": str(model) if model else "bundled default",
        "loss": loss_config.to_dict(),
        "total": formula,
        "methods": list(methods),
        "rows": rows,
        "aggregate": aggregates,
        "thresholds": checks,
        "failed": failed,
    }


def _eval_csv(rows: list[dict], aggregates: list[dict]) -> str:
    import csv
    import io

    from fusecli.evaluate import METRICS

    buffer = io.StringIO()
    fields = ["kind", "stack", "method", "status", "labelled", "reason", *METRICS, "seconds", "stacks"]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({"kind": "stack", **r})
    for a in aggregates:
        writer.writerow({"kind": a["stat"], "stack": "", "status": "", "reason": "", **{k: v for k, v in a.items() if k != "stat"}})
    return buffer.getvalue()


def _print_eval_tables(rows, aggregates, methods, ev, formula: str, checks, per_stack: bool) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    metrics = [m for m in ev.METRICS if any(a[m] is not None for a in aggregates)]

    def best_of(group: list[dict], metric: str):
        values = [g[metric] for g in group if g[metric] is not None]
        if len(values) < 2:
            return None
        return max(values) if metric in ev.HIGHER_IS_BETTER else min(values)

    def cell(value, best) -> str:
        if value is None:
            return "-"
        text = f"{value:.2f}" if abs(value) >= 10 else (f"{value:.2e}" if 0 < abs(value) < 1e-3 else f"{value:.4f}")
        return f"[bold green]{text}[/]" if best is not None and value == best else text

    if per_stack:
        short = [m for m in ("total", "l1", "psnr", "ssim", "mef_ssim") if m in metrics]
        table = Table(title="per stack (every metric: --json or --csv)")
        for col in ("stack", "method", *short):
            table.add_column(col, justify="left" if col in ("stack", "method") else "right", overflow="fold")
        for s in dict.fromkeys(r["stack"] for r in rows):
            group = [r for r in rows if r["stack"] == s]
            ok = [r for r in group if r["status"] == "ok"]
            for j, r in enumerate(group):
                values = [cell(r[m], best_of(ok, m)) for m in short] if r["status"] == "ok" else ["[red]failed[/]"] + [""] * (len(short) - 1)
                table.add_row(escape(s) if j == 0 else "", escape(r["method"]), *values, end_section=j == len(group) - 1)
        console.print(table)
    n = len(dict.fromkeys(r["stack"] for r in rows))
    labelled = len({r["stack"] for r in rows if r["labelled"]})
    table = Table(title=f"{n} stacks, {labelled} labelled: mean (median)")
    table.add_column("metric")
    means = [a for a in aggregates if a["stat"] == "mean"]
    medians = {a["method"]: a for a in aggregates if a["stat"] == "median"}
    for a in means:
        table.add_column(f"{escape(a['method'])}\n{a['stacks']} stacks", justify="right")
    for m in metrics:
        best = best_of(means, m)
        table.add_row(f"{m} {'↑' if m in ev.HIGHER_IS_BETTER else '↓'}", *[f"{cell(a[m], best)}\n[dim]({cell(medians[a['method']][m], None)})[/]" for a in means])
    console.print(table)
    console.print(escape(formula), highlight=False)
    for r in rows:
        if r["status"] == "failed":
            console.print(f"[red]{escape(r['stack'])} ({escape(r['method'])}): {escape(r['reason'] or '')}[/]")
    for c in checks:
        verdict = "[green]met[/]" if c["passed"] else "[red]missed[/]"
        sign = ">=" if c["op"] == "under" else "<="
        console.print(f"threshold {c['metric']} {sign} {c['limit']:g} for {escape(c['method'])}: {c['value'] if c['value'] is None else round(c['value'], 4)} {verdict}")


def main() -> None:
    passive_openmp_threads()
    keep_freed_memory()
    app()


if __name__ == "__main__":
    main()
