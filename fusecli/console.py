"""What the commands print for people and pipelines: tables, summaries, JSON/CSV and progress bars.

Everything here takes plain results (dicts, :class:`fusecli.fuse.Result`) and prints them; nothing
here computes a result. Tables go to stdout, progress and per-stack problems to stderr.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import Callable, Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

#: The version of every --json document's layout: pipelines check it before they parse.
JSON_SCHEMA = 1


def _finite(value):
    """``value`` with every NaN or infinity (nested in dicts and lists) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def one_line(message: str, limit: int = 400) -> str:
    """A message as one line a person reads: line breaks folded, and the middle of a longer one cut
    (a reader's own error can quote a whole header)."""
    text = " ".join(message.split())
    return text if len(text) <= limit else f"{text[: limit - 100]} [...] {text[-90:]}"


def dumps(document: dict, indent: int | None = 2) -> str:
    """A --json document as valid JSON: NaN and infinity (which JSON has not) become null."""
    return json.dumps(_finite(document), indent=indent, allow_nan=False)


def _stdout() -> Console:
    """Rich's console for stdout: the terminal's width, or 200 columns when stdout is a file or a
    pipe (Rich's 80 would fold table rows for the program reading them)."""
    console = Console()
    return console if console.is_terminal else Console(width=200)


@contextlib.contextmanager
def progress(
    total: int, label: str, quiet: bool = False, info: bool = False, lines: bool = True
) -> Iterator[Callable[..., None]]:
    """Progress on stderr, not when ``quiet``: a bar on a terminal; elsewhere (CI logs, nohup), with
    ``lines``, a line per step -> ``advance(n=1, completed=None, info="", item="")``: move on by ``n``
    (or to ``completed``), showing ``info``; ``item`` names what was done (for the lines)."""
    columns = [TextColumn("{task.completed}/{task.total} " + label), BarColumn()]
    if info:
        columns.append(TextColumn("{task.fields[info]}"))
    columns.append(TimeRemainingColumn())
    err = Console(stderr=True)
    with Progress(*columns, console=err, disable=quiet or not err.is_terminal) as bar:
        task = bar.add_task(label, total=total, info="")

        def advance(n: int = 1, completed: int | None = None, info: str = "", item: str = "") -> None:
            if completed is not None:
                bar.update(task, completed=completed, info=info)
            else:
                bar.update(task, advance=n, info=info)
            if lines and not quiet and not err.is_terminal:
                done = int(bar.tasks[0].completed)
                text = "  ".join(t for t in (item, info) if t)
                print(f"{done}/{total} {label}: {text}".rstrip(": "), file=sys.stderr, flush=True)

        yield advance


def say(message: str) -> None:
    """One line on stderr (a warning, an error, a note), above a progress bar if one is drawn."""
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def fuse_progress(total: int, quiet: bool = False, verbose: bool = False) -> Iterator[Callable]:
    """``fuse``'s reporting as each stack is done -> ``on_result(result)``: its error (always), its
    warnings (unless ``quiet``), its notes (when ``verbose``) as lines on stderr, and progress
    (:func:`progress`, the rate in MP/s)."""
    done = {"mp": 0.0, "s": 0.0}
    with progress(total, "stacks", quiet, info=True) as advance:

        def on_result(result) -> None:
            if result.status == "failed":  # on stderr as it happens: a pipeline reading --json sees it too
                say(f"fusecli fuse: error: {result.stack}: {one_line(result.reason or '')}")
            for warning in [] if quiet else result.warnings:
                say(f"fusecli fuse: warning: {one_line(warning)}")
            for note in result.notes if verbose and not quiet else []:
                say(f"fusecli fuse: note: {result.stack}: {one_line(note)}")
            done["mp"] += result.megapixels
            done["s"] += result.seconds
            seconds = f" in {result.seconds:.1f} s" if result.seconds else ""
            rate = f"{done['mp'] / done['s']:.1f} MP/s" if done["s"] else ""
            advance(info=rate, item=f"{result.stack} {result.status}{seconds}")

        yield on_result


def fuse_row(result) -> dict:
    """One ``fuse --json`` row (docs/fusing.md gives the schema)."""
    return {
        "stack": result.stack,
        "status": result.status,
        "inputs": list(result.inputs),
        "outputs": list(result.outputs),
        "reason": result.reason,
        "seconds": round(result.seconds, 3),
        "megapixels": round(result.megapixels, 3),
        "motion": list(result.motion),
        "warnings": list(result.warnings),
        "notes": list(result.notes),
    }


@contextlib.contextmanager
def train_progress(total: int) -> Iterator[Callable[[int, dict], None]]:
    """``train``'s progress bar -> ``on_step(step, record)``: the loss, L1 and speed of the step; a
    validation also as a line on stderr when it is not a terminal (CI logs, nohup)."""
    with progress(total, "steps", info=True, lines=False) as advance:

        def on_step(step: int, record: dict) -> None:
            info = f"loss {record['total']:.4f}  l1 {record['l1']:.4f}  {record['samples_per_s']:.1f} samples/s"
            if "val" in record:
                info += f"  val {record['val']['total']:.4f} psnr {record['val']['psnr']:.2f}"
                if not sys.stderr.isatty():
                    print(f"step {step}: {info}", file=sys.stderr, flush=True)
            advance(completed=step, info=info)

        yield on_step


def train_summary(run: Path, steps: int, summary: dict, export: Path | None, as_json: bool) -> str:
    """What ``train`` prints when it is done: a line for people, or ``--json``'s document."""
    if as_json:
        document = {"schema": JSON_SCHEMA, "run": str(run), "steps": steps, "validation": summary or None}
        return dumps({**document, "export": str(export) if export else None})
    figures = ", ".join(f"{k} {v:.4g}" for k, v in (summary or {}).items() if isinstance(v, float))
    done = f"fusecli train: {steps} step{'s' if steps != 1 else ''} in {run}"
    return done + (f"; last validation: {figures}" if figures else "")


def seconds_text(t: float | None) -> str:
    """An exposure time as photographers write it: 1/250, 0.3, 2."""
    if t is None:
        return "?"
    if t < 1 and abs(1 / t - round(1 / t)) < 0.01 * (1 / t):
        return f"1/{round(1 / t)}"
    return f"{t:g}"


def motion_text(m: dict) -> str:
    """One frame's motion for people: 'aligned: moved 1.23, -0.40 px, turned 0.10 deg'."""
    if m["status"] == "unaligned":
        return f"unaligned: {m['reason']}"
    return (
        f"{m['status']}: moved {m['dx']:.2f}, {m['dy']:.2f} px, turned {m['rotation_deg']:.2f} deg "
        f"(ECC {m['correlation']:.3f})"
    )


def print_stack_table(rows: list[dict], decoded: bool = False) -> None:
    """``inspect``'s table: a section per stack, a row per frame, then notes, motion and errors."""
    how = "every frame decoded" if decoded else "read from headers only; --decode decodes every frame"
    singles = sum(bool(r.get("single")) for r in rows)
    title = f"{len(rows) - singles} stack(s)" + (f", {singles} single shot(s)" if singles else "")
    table = Table(title=title, caption=how)
    for col in ("stack", "frame", "exposure s", "ratio", "from", "size", "CFA / colour", "label"):
        table.add_column(col, overflow="fold", no_wrap=col in ("frame", "exposure s", "ratio", "from"))
    for r in rows:
        if "error" in r:
            table.add_row(escape(r["name"]), "", "", "", "[red]failed[/red]", "", "", "", end_section=True)
            continue
        if r.get("single"):
            f = r["frames"][0]
            size = f"{r['width']}x{r['height']}x{r['channels']}"
            shot = escape(Path(f["path"]).name)
            table.add_row(
                escape(r["name"]), shot, seconds_text(f["exposure_time"]), "-", "[blue]single[/]", size, "", ""
            )
            table.add_section()
            continue
        for j, f in enumerate(r["frames"]):
            first = j == 0
            page = f"[{f['page']}]" if f["page"] is not None else ""
            table.add_row(
                escape(r["name"]) if first else "",
                escape(Path(f["path"]).name + page),
                seconds_text(f["exposure_time"]),
                f"{f['ratio']:.4g}",
                r["ratio_source"] if first else "",
                f"{r['width']}x{r['height']}x{r['channels']}" if first else "",
                escape(r["cfa"] or r.get("colour_space") or "-") if first else "",
                ("yes" if r["label"] else "no") if first else "",
                end_section=j == len(r["frames"]) - 1,
            )
    console = _stdout()
    console.print(table)
    for r in rows:
        for note in r.get("notes", []):
            console.print(f"{escape(r['name'])}: {escape(note)}")
        for m in r.get("motion", [])[1:]:
            console.print(escape(f"{r['name']}: frame {m['frame'] + 1} {motion_text(m)}"), highlight=False)
        if "error" in r:
            console.print(f"[red]{escape(r['name'])}: {escape(r['error'])}[/red]")


def print_fuse_summary(results) -> None:
    """``fuse``'s summary table: a row per stack with its status, outputs or reason, and seconds."""
    counts = {s: sum(r.status == s for r in results) for s in ("fused", "skipped", "failed", "single")}
    title = f"{counts['fused']} fused, {counts['skipped']} skipped, {counts['failed']} failed"
    table = Table(title=title + (f", {counts['single']} single shot(s) not fused" if counts["single"] else ""))
    for col in ("stack", "status", "outputs / reason", "s"):
        table.add_column(col, overflow="fold")
    colour = {"fused": "green", "skipped": "yellow", "failed": "red", "planned": "cyan", "single": "blue"}
    for r in results:
        detail = r.reason if r.status in ("failed", "skipped", "single") else "\n".join(Path(o).name for o in r.outputs)
        moved = [m for m in r.motion[1:] if m["status"] == "aligned"]
        if moved:
            detail += "\naligned: " + ", ".join(f"#{m['frame'] + 1} {m['dx']:+.1f},{m['dy']:+.1f} px" for m in moved)
        seconds = f"{r.seconds:.2f}" if r.seconds else ""
        table.add_row(escape(r.stack), f"[{colour[r.status]}]{r.status}[/]", escape(detail or ""), seconds)
    _stdout().print(table)


def eval_json(model, evaluation) -> dict:
    """``eval --json``'s document of a :class:`fusecli.evaluate.Evaluation`."""
    return {
        "schema": JSON_SCHEMA,
        "model": str(model) if model else "bundled default",
        "loss": evaluation.loss.to_dict(),
        "total": evaluation.formula,
        "methods": list(evaluation.methods),
        "rows": evaluation.rows,
        "aggregate": evaluation.aggregates,
        "thresholds": evaluation.checks,
        "failed": evaluation.failed,
    }


def eval_csv(evaluation) -> str:
    """``eval --csv``: one row per stack and method, tidy (the aggregates are ``--json``'s)."""
    buffer = io.StringIO()
    fields = ["stack", "method", "status", "labelled", "reason", *evaluation.metrics, "seconds"]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(evaluation.rows)
    return buffer.getvalue()


def _cell(value, best) -> str:
    if value is None:
        return "-"
    if abs(value) >= 10:
        text = f"{value:.2f}"
    elif 0 < abs(value) < 1e-3:
        text = f"{value:.2e}"
    else:
        text = f"{value:.4f}"
    return f"[bold green]{text}[/]" if best is not None and value == best else text


def _best(group: list[dict], metric: str, higher_is_better: frozenset):
    values = [g[metric] for g in group if g[metric] is not None]
    if len(values) < 2:
        return None
    return max(values) if metric in higher_is_better else min(values)


def print_eval_tables(evaluation, per_stack: bool) -> None:
    """``eval``'s tables of a :class:`fusecli.evaluate.Evaluation`: per stack (optional), then mean
    (median) per metric and method, the loss formula, failures and thresholds."""
    rows, aggregates, checks = evaluation.rows, evaluation.aggregates, evaluation.checks
    metrics, higher_is_better, formula = evaluation.metrics, evaluation.higher_is_better, evaluation.formula
    console = _stdout()
    metrics = [m for m in metrics if any(a[m] is not None for a in aggregates)]
    if per_stack:
        short = [m for m in ("total", "l1", "psnr", "ssim", "mef_ssim") if m in metrics]
        table = Table(title="per stack (every metric: --json or --csv)")
        for col in ("stack", "method", *short):
            table.add_column(col, justify="left" if col in ("stack", "method") else "right", overflow="fold")
        for s in dict.fromkeys(r["stack"] for r in rows):
            group = [r for r in rows if r["stack"] == s]
            ok = [r for r in group if r["status"] == "ok"]
            for j, r in enumerate(group):
                if r["status"] == "ok":
                    values = [_cell(r[m], _best(ok, m, higher_is_better)) for m in short]
                else:
                    values = ["[red]failed[/]"] + [""] * (len(short) - 1)
                name = escape(s) if j == 0 else ""
                table.add_row(name, escape(r["method"]), *values, end_section=j == len(group) - 1)
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
        best = _best(means, m, higher_is_better)
        arrow = "↑" if m in higher_is_better else "↓"
        cells = [f"{_cell(a[m], best)}\n[dim]({_cell(medians[a['method']][m], None)})[/]" for a in means]
        table.add_row(f"{m} {arrow}", *cells)
    console.print(table)
    console.print(escape(formula), highlight=False)
    for r in rows:
        if r["status"] == "failed":
            console.print(f"[red]{escape(r['stack'])} ({escape(r['method'])}): {escape(r['reason'] or '')}[/]")
    for c in checks:
        verdict = "[green]met[/]" if c["passed"] else "[red]missed[/]"
        sign = ">=" if c["op"] == "under" else "<="
        value = c["value"] if c["value"] is None else round(c["value"], 4)
        console.print(f"threshold {c['metric']} {sign} {c['limit']:g} for {escape(c['method'])}: {value} {verdict}")
