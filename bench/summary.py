"""The tables of README.md, bench/README.md and docs/evaluation.md, generated from
bench/results/*.json: each page holds its table between ``<!-- results:begin -->`` and
``<!-- results:end -->``, and nothing there is written by hand.

    python bench/summary.py            # print both tables
    python bench/summary.py --write    # rewrite them in the pages
    python bench/summary.py --check    # exit 1 if a page's table differs from the results

Imports nothing but the standard library, so the test suite can run it.
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
#: The results README.md's headline table shows, in this order (bench/README.md shows every one).
FRONT = ("real_brackets", "raw_range", "mertens", "enfuse", "folder", "fuse_24mp_3f_align-translation", "eval")


def load() -> dict[str, dict]:
    """Every result by name (file stem), in name order."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))}


def _machine(m: dict) -> str:
    cpu = m["cpu"].replace("(R)", "").replace("(TM)", "").replace(" Processor", "").replace(" CPU", "")
    return f"{m['gpu']}" if m.get("gpu") else f"{cpu}, {m['cores']} cores"


def _cell(h: dict) -> str:
    unit = f" {h['unit']}" if h["unit"] else ""
    return f"{h['value']}{unit}"


def _verdict(h: dict) -> str:
    if h["target"] is None:
        return ""
    return f"{h['target']}: {'met' if h['met'] else '**missed**'}"


def table(results: dict[str, dict], names: list[str], link_prefix: str) -> str:
    """A markdown table of the headlines of ``names`` (each row links its result file)."""
    rows = ["| what | figure | target | machine, date | result |", "| --- | --- | --- | --- | --- |"]
    for name in names:
        r = results[name]
        for h in r["headlines"]:
            link = f"[{name}]({link_prefix}{name}.json)"
            rows.append(
                f"| {h['what']} | {_cell(h)} | {_verdict(h)} | {_machine(r['machine'])}, {r['date'][:10]} | {link} |"
            )
    return "\n".join(rows)


def per_stack(result: dict | None) -> str:
    """The real brackets benchmark's table: MEF-SSIM per bracket and method, the best in bold, the
    global contrast of fusecli's and Mertens's results, which half each bracket is in, then the means
    and how often the first method beats each other."""
    if result is None:
        return "(no results yet: python bench/real_brackets.py)"
    f = result["figures"]
    methods = f["methods"]
    contrast = f.get("global_contrast", {})
    held = set(f.get("halves", {}).get("held out", {}).get("stacks", []))
    extra = ["contrast " + methods[0], "contrast mertens"] if contrast else []
    rows = ["| bracket | " + " | ".join(methods + extra) + " |", "| --- |" + " --- |" * len(methods + extra)]
    for name, scores in f["stacks"].items():
        best = max((v for v in scores.values() if v is not None), default=None)
        cells = ["-" if v is None else (f"**{v:.4f}**" if v == best else f"{v:.4f}") for v in scores.values()]
        if contrast:
            c = contrast.get(name, {})
            cells += [f"{c[m]:.3f}" if m in c else "-" for m in (methods[0], "mertens")]
        rows.append(f"| {name}{' (held out)' if name in held else ''} | " + " | ".join(cells) + " |")
    means = ["-" if f["means"][m] is None else f"{f['means'][m]:.4f}" for m in methods]
    if contrast:
        means += [f"{f['contrast_means'][m]:.3f}" for m in (methods[0], "mertens")]
    rows.append("| **mean** | " + " | ".join(means) + " |")
    wins = "; ".join(f"{k.replace(' > ', ' beats ')} on {w}/{n}" for k, (w, n) in f["wins"].items())
    halves = "".join(
        f" {part}: {methods[0]} {h['mef_ssim'][methods[0]]:.4f}, Mertens {h['mef_ssim']['mertens']:.4f}, "
        f"ahead on {h['wins_over_mertens'][0]}/{h['wins_over_mertens'][1]}."
        for part, h in f.get("halves", {}).items()
    )
    machine = _machine(result["machine"])
    return (
        "\n".join(rows)
        + f"\n\n{wins}.{halves} ({machine}, {result['date'][:10]}, commit {result['commit']}: `{result['command']}`)"
    )


def pages(results: dict[str, dict]) -> dict[Path, str]:
    """Each page and the table that belongs between its markers."""
    front = [n for n in FRONT if n in results]
    return {
        ROOT / "README.md": table(results, front, "bench/results/"),
        ROOT / "bench" / "README.md": table(results, list(results), "results/"),
        ROOT / "docs" / "evaluation.md": per_stack(results.get("real_brackets")),
    }


def replace(text: str, block: str, page: Path) -> str:
    """``text`` with the part between the markers replaced by ``block``."""
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{page}: no {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{block}\n{END}{tail}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the tables in README.md and bench/README.md")
    mode.add_argument("--check", action="store_true", help="exit 1 if a page's table differs from the results")
    a = ap.parse_args()
    stale = []
    for page, block in pages(load()).items():
        text = page.read_text()
        new = replace(text, block, page)
        if a.write and new != text:
            page.write_text(new)
            print(f"rewrote the table of {page.relative_to(ROOT)}")
        elif a.check and new != text:
            stale.append(str(page.relative_to(ROOT)))
        elif not a.write and not a.check:
            print(f"{page.relative_to(ROOT)}:\n{block}\n")
    if stale:
        sys.exit(f"out of date with bench/results/: {', '.join(stale)} (run python bench/summary.py --write)")


if __name__ == "__main__":
    main()
