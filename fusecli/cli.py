"""fusecli's command line: Typer commands that parse options, call library code and print.

User errors (:class:`fusecli.errors.FuseError`) become one line on stderr and exit code 1 here, and
only here. Usage errors (a bad option or choice) are Click's, exit code 2.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Annotated, Iterator

import typer

from fusecli import __version__
from fusecli import options as opt
from fusecli.console import JSON_SCHEMA, dumps, one_line
from fusecli.errors import FuseError, UsageError
from fusecli.runtime import keep_freed_memory, library_defaults

app = typer.Typer(
    cls=opt.OneLineUsage,
    help="HDR fusion of exposure brackets (camera RAW or TIFF/PNG/JPEG stacks) with a learned fusion network.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)

EXIT_USER_ERROR = 1
EXIT_USAGE = 2
EXIT_THRESHOLD = 3


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a FuseError into its one-line message on stderr and exit code 1 (2 for a UsageError)."""
    try:
        yield
    except FuseError as e:
        typer.echo(f"fusecli: error: {one_line(str(e))}", err=True)
        raise typer.Exit(EXIT_USAGE if isinstance(e, UsageError) else EXIT_USER_ERROR) from None


def _exit_now(code: int) -> None:
    """Exit at once with ``code``, once the interrupted work has cleaned up after itself: the
    interpreter's teardown (torch, OpenMP, worker threads) could otherwise still end the process by
    the default SIGINT handler."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fusecli {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """fusecli: fuse exposure brackets into one image."""


@app.command()
def inspect(
    paths: opt.Paths,
    as_json: opt.AsJson = False,
    group: opt.GroupOpt = opt.Grouping.auto,
    group_size: opt.GroupSize = None,
    ratios: opt.Ratios = None,
    transfer: opt.TransferOpt = opt.Transfer.auto,
    align: opt.InspectAlign = opt.AlignMode.none,
    decode: opt.Decode = False,
) -> None:
    """Show the stacks found in PATHS: frames, exposures, ratios and where they came from."""
    from fusecli.console import print_stack_table
    from fusecli.describe import describe
    from fusecli.discover import GroupOptions, discover
    from fusecli.stack import StackOptions

    with user_errors():
        options = StackOptions(opt.ratios(ratios), transfer.value, align.value, deghost=False)
        sources = discover(opt.paths(paths), GroupOptions(group, group_size, user_ratios=ratios is not None))
    rows, failed = [], 0
    for source in sources:
        try:
            rows.append(describe(source, options, decode))
        except FuseError as e:
            failed += 1
            rows.append(
                {"name": source.name, "error": str(e), "frames": [{"path": str(f.path)} for f in source.frames]}
            )
            typer.echo(f"fusecli: error: {one_line(str(e))}", err=True)
    if as_json:
        typer.echo(dumps({"schema": JSON_SCHEMA, "stacks": rows, "failed": failed}))
    else:
        print_stack_table(rows, decoded=decode)
    if failed:
        raise typer.Exit(EXIT_USER_ERROR)


@app.command()
def synth(
    radiance: opt.Radiance = None,
    out: opt.Out = ...,  # type: ignore[assignment]
    stacks: opt.Stacks = 1,
    procedural: opt.Procedural = 0,
    size: opt.Size = "512x384",
    ratios: opt.SynthRatios = "1,0.25,0.0625",
    cfa: opt.Cfa = None,
    seed: opt.Seed = 0,
    shift: opt.Shift = 0.0,
    rotate: opt.Rotate = 0.0,
    moving_object: opt.MovingObject = False,
    display: opt.Display = False,
    frames: opt.Frames = 3,
    as_json: opt.AsJson = False,
) -> None:
    """Synthesise RAW brackets (DNG) with labels from real radiance maps and procedural scenes."""
    from fusecli.synth import DisplayConfig, SynthConfig, synthesise

    with user_errors():
        width, height = opt.size(size)
        cfg = SynthConfig(
            width, height, opt.ratios(ratios) or (), cfa=cfa, shift=shift, rotate=rotate, moving_object=moving_object
        )
        shown = DisplayConfig(size=max(width, height), frames=frames) if display else None
        written = synthesise(
            radiance or [], out, stacks_per_map=stacks, procedural=procedural, cfg=cfg, seed=seed, display=shown
        )
    if as_json:
        typer.echo(dumps({"schema": JSON_SCHEMA, "stacks": [str(f) for f in written]}))
    else:
        for folder in written:
            typer.echo(str(folder))


@app.command()
def train(
    datasets: opt.Datasets = None,
    run: opt.RunDir = None,
    config: opt.Config = None,
    val: opt.Val = None,
    synth: opt.SynthMaps = None,
    steps: opt.Steps = None,
    batch_size: opt.BatchSize = None,
    lr: opt.Lr = None,
    seed: opt.Seed = None,
    device: opt.TrainDevice = None,
    workers: opt.Workers = None,
    overrides: opt.Overrides = None,
    resume: opt.Resume = None,
    export: opt.Export = None,
    as_json: opt.AsJson = False,
) -> None:
    """Train the fusion network on labelled stacks (or brackets synthesised from radiance maps)."""
    from fusecli.console import train_progress, train_summary
    from fusecli.train import configure
    from fusecli.train import train as run_training

    with user_errors():
        flags = {
            "steps": steps,
            "batch_size": batch_size,
            "optim.lr": lr,
            "seed": seed,
            "device": device.value if device else None,
            "data.workers": workers,
            "data.datasets": [str(p) for p in datasets] if datasets else None,
            "data.val": [str(p) for p in val] if val else None,
            "data.synth_radiance": [str(p) for p in synth] if synth else None,
        }
        cfg, run = configure(run, resume, config, {k: v for k, v in flags.items() if v is not None}, overrides or [])
        with train_progress(cfg.steps) as on_step:
            try:
                summary = run_training(cfg, run, resume=resume is not None, export=export, on_step=on_step)
            except KeyboardInterrupt:
                typer.echo(
                    f"fusecli train: interrupted; checkpoint saved, continue with: fusecli train --resume {run}",
                    err=True,
                )
                _exit_now(130)
    typer.echo(train_summary(run, cfg.steps, summary, export, as_json))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # A torchrun rank whose work is saved exits at once: C++ threads of the distributed backend
        # still alive in the interpreter's teardown can abort it, even after destroy_process_group.
        _exit_now(0)


@app.command()
def fuse(
    paths: opt.Paths,
    out: opt.Out = ...,  # type: ignore[assignment]
    model: opt.ModelFile = None,
    device: opt.DeviceOpt = opt.Device.auto,
    formats: opt.Formats = None,
    linear: opt.Linear = False,
    overwrite: opt.Overwrite = False,
    dry_run: opt.DryRun = False,
    save_weights: opt.SaveWeights = False,
    group: opt.GroupOpt = opt.Grouping.auto,
    group_size: opt.GroupSize = None,
    ratios: opt.Ratios = None,
    transfer: opt.TransferOpt = opt.Transfer.auto,
    max_memory: opt.MaxMemory = 0.25,
    jobs: opt.Jobs = None,
    align: opt.AlignOpt = opt.AlignMode.translation,
    deghost: opt.Deghost = True,
    shard: opt.Shard = None,
    quality: opt.Quality = 95,
    dng: opt.DngOpt = opt.DngKind.linear,
    as_json: opt.AsJson = False,
    quiet: opt.Quiet = False,
    verbose: opt.Verbose = False,
) -> None:
    """Fuse each bracket into one image, by default of the frames' own kind (DNG for RAW stacks)."""
    from fusecli.console import fuse_progress, fuse_row, print_fuse_summary
    from fusecli.discover import GroupOptions, discover, select_shard
    from fusecli.fuse import FuseOptions, fuse_sources
    from fusecli.model import load_model
    from fusecli.outputs import OutputOptions, remove_stale_parts
    from fusecli.runtime import pick_device
    from fusecli.stack import StackOptions

    wanted = opt.choices(opt.OutputFormat, formats, {"jpeg": "jpg", "tif": "tiff"})
    with user_errors():
        stack_options = StackOptions(opt.ratios(ratios), transfer.value, align.value, deghost)
        output_options = OutputOptions(wanted, linear, overwrite, save_weights, quality, dng.value)
        options = FuseOptions(stack_options, output_options, max_memory, dry_run, jobs)
        sources = discover(opt.paths(paths), GroupOptions(group, group_size, user_ratios=ratios is not None))
        if (part := opt.shard(shard)) is not None:
            sources = select_shard(sources, *part)
        torch_device = pick_device(device.value)
        net = load_model(model, torch_device)[0] if not dry_run else None
        with fuse_progress(len(sources), quiet, verbose) as on_result:
            try:
                results = fuse_sources(sources, net, torch_device, out, options, on_result=on_result)
            except KeyboardInterrupt:
                if not dry_run and out.is_dir():
                    remove_stale_parts(out, own=True)  # an interrupt inside mkstemp can beat atomic_path's own clean-up
                typer.echo(
                    "fusecli fuse: interrupted; finished outputs are complete, the one being written was discarded",
                    err=True,
                )
                _exit_now(130)
    if as_json:
        failed = sum(r.status == "failed" for r in results)
        typer.echo(dumps({"schema": JSON_SCHEMA, "results": [fuse_row(r) for r in results], "failed": failed}))
    elif not quiet:
        print_fuse_summary(results)
    if any(r.status == "failed" for r in results):
        raise typer.Exit(EXIT_USER_ERROR)


@app.command("eval")
def evaluate(
    paths: opt.EvalPaths,
    model: opt.ModelFile = None,
    method: opt.Methods = "model",
    pred: opt.Preds = None,
    device: opt.DeviceOpt = opt.Device.auto,
    as_json: opt.AsJson = False,
    as_csv: opt.AsCsv = False,
    per_stack: opt.PerStack = False,
    fail_under: opt.FailUnder = None,
    fail_over: opt.FailOver = None,
    report: opt.Report = None,
    group: opt.GroupOpt = opt.Grouping.auto,
    group_size: opt.GroupSize = None,
    ratios: opt.Ratios = None,
    transfer: opt.TransferOpt = opt.Transfer.auto,
    align: opt.AlignOpt = opt.AlignMode.translation,
    deghost: opt.Deghost = True,
    quiet: opt.Quiet = False,
    verbose: opt.Verbose = False,
) -> None:
    """Score the model and baselines against held-out labels: the seed's loss terms, PSNR, SSIM, MEF-SSIM.

    Exit codes: 0 all stacks scored (and thresholds met), 1 some stack or method could not be scored
    (reasons in the output), 2 usage error, 3 a --fail-under/--fail-over threshold missed.
    """
    from fusecli import evaluate as ev
    from fusecli.console import eval_csv, eval_json, print_eval_tables, progress, say
    from fusecli.discover import GroupOptions, discover
    from fusecli.io.common import check_writable
    from fusecli.losses import LossConfig
    from fusecli.model import load_model
    from fusecli.report import write_contact_sheet, write_summary_plot
    from fusecli.runtime import pick_device
    from fusecli.stack import StackOptions

    methods = opt.choices(opt.Method, method) or ()
    with user_errors():
        if as_json and as_csv:
            raise UsageError("--json and --csv: choose one")
        stack_options = StackOptions(opt.ratios(ratios), transfer.value, align.value, deghost)
        options = ev.EvalOptions(methods, tuple(pred or ()), stack_options)
        names = ev.method_names(options)
        if report is not None:  # checked before hours of scoring, not after
            check_writable(report, "report (--report)")
        thresholds = ev.parse_thresholds(fail_under, "under") + ev.parse_thresholds(fail_over, "over")
        sources = discover(opt.paths(paths), GroupOptions(group, group_size, user_ratios=ratios is not None))
        torch_device = pick_device(device.value)
        net, sidecar = load_model(model, torch_device)
        loss_config = LossConfig.from_dict(sidecar.get("loss", {}), source=str(model or "the bundled model"))
        with progress(len(sources), "stacks", quiet) as advance:

            def on_case(case, case_rows, predictions) -> None:
                for r in (r for r in case_rows if r["status"] == "failed"):
                    say(f"fusecli eval: {r['stack']} ({r['method']}): {one_line(r['reason'] or '')}")
                if report is not None and case.stack is not None and predictions:
                    write_contact_sheet(report, case, predictions, case_rows)
                advance(item=case.source.name)

            rows = ev.evaluate_sources(
                sources, net, torch_device, loss_config=loss_config, options=options, on_case=on_case
            )
        if report is not None:
            write_summary_plot(report, rows, names)
    evaluation = ev.summarise(rows, names, thresholds, loss_config)
    if as_json:
        typer.echo(dumps(eval_json(model, evaluation)))
    elif as_csv:
        typer.echo(eval_csv(evaluation), nl=False)
    elif not quiet:
        print_eval_tables(evaluation, per_stack or verbose)
    if evaluation.failed:
        raise typer.Exit(EXIT_USER_ERROR)
    if any(not c["passed"] for c in evaluation.checks):
        raise typer.Exit(EXIT_THRESHOLD)


def main() -> None:
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 is printed escaped, not a traceback
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    library_defaults()
    keep_freed_memory()
    app()


if __name__ == "__main__":
    main()
