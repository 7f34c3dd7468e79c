"""Run the benchmarks: every bench/bench_<name>.py in name order, one table, results.json.

    python -m bench.run                 # all, full size (make bench)
    python -m bench.run --only flash    # one benchmark (repeatable)
    python -m bench.run --quick         # reduced sizes: proves they run, judges nothing

Each module has TITLE and run(quick=False) -> list[Row] (bench/common.py). A module that
raises gets one failed row with the error and the run exits 1; a missed target is a
result, not an error (exit 0), and the table says by how much in its note.
Results are merged into bench/results.json by module (a partial run keeps the others).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Sequence

from rich.console import Console
from rich.table import Table

from bench.common import Row

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results.json"


class BenchError(Exception):
    """A benchmark module is missing, or broke the row contract."""


def discover() -> list[str]:
    """Module names (bench_<name>) of every benchmark, in name order."""
    return sorted(p.stem for p in BENCH_DIR.glob("bench_*.py"))


def select(names: Sequence[str] | None) -> list[str]:
    """The modules `--only` asks for ("flash" or "bench_flash"); all when None."""
    found = discover()
    if not names:
        return found
    chosen = []
    for n in names:
        mod = n if n.startswith("bench_") else "bench_" + n
        if mod not in found:
            short = ", ".join(m[6:] for m in found) or "none"
            raise BenchError(f"no benchmark named {n!r} (there are: {short})")
        if mod not in chosen:
            chosen.append(mod)
    return sorted(chosen)


def check_rows(mod: str, rows: object) -> list[Row]:
    """The rows, or BenchError saying how they break the contract in bench/common.py."""
    if not isinstance(rows, list) or not rows:
        raise BenchError(f"{mod}.run() must return a non-empty list of Row")
    for r in rows:
        if not isinstance(r, Row):
            raise BenchError(f"{mod}.run() returned {type(r).__name__}, not Row")
        if not r.name or not r.unit:
            raise BenchError(f"{mod}: a row without a name or unit")
        if isinstance(r.value, bool) or not isinstance(r.value, (int, float, str)):
            raise BenchError(f"{mod}: row {r.name!r} has no measured figure")
        if (r.met is None) != (r.target == ""):
            raise BenchError(f"{mod}: row {r.name!r}: a target needs met, met needs a target")
        json.dumps(r.as_dict())  # raises on a figure that cannot be recorded
    return rows


def run_module(mod: str, quick: bool) -> dict:
    """Run one benchmark module; its entry for results.json (rows as dicts)."""
    t0 = time.monotonic()
    title = mod
    try:
        m = importlib.import_module("bench." + mod)
        title = getattr(m, "TITLE", "") or mod
        rows = check_rows(mod, m.run(quick=quick))
        error = ""
    except Exception as exc:  # one broken benchmark must not hide the others' figures
        rows = [Row(name=f"{mod} failed", value="error", unit="-", target="runs", met=False,
                    note=f"{type(exc).__name__}: {exc}")]
        error = traceback.format_exc()
    return {"module": mod, "title": title, "quick": quick,
            "seconds": round(time.monotonic() - t0, 1),
            "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "rows": [r.as_dict() for r in rows], **({"error": error} if error else {})}


def fmt(value: object) -> str:
    """A figure as the table shows it: 12,345 / 0.0123 / 1.23e+06 / text."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if value == 0 or 0.01 <= abs(value) < 1e6:
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{value:.3g}"


def table(entries: list[dict]) -> Table:
    t = Table(title="parcelbox benchmarks", show_lines=False)
    for col, just in (("name", "left"), ("figure", "right"), ("unit", "left"),
                      ("target", "left"), ("met", "center")):
        t.add_column(col, justify=just)
    for e in entries:
        t.add_row(f"[bold]{e['title']}[/bold] ({e['module'][6:]}, {e['seconds']} s"
                  f"{', quick' if e['quick'] else ''})", "", "", "", "")
        for r in e["rows"]:
            met = {True: "[green]yes[/green]", False: "[red]NO[/red]", None: ""}[r["met"]]
            t.add_row("  " + r["name"], fmt(r["value"]), r["unit"], r["target"], met)
    return t


def merge(path: Path, entries: list[dict]) -> dict:
    """results.json with these modules' entries replaced; others kept, in name order."""
    old = {}
    if path.is_file():
        try:
            old = {e["module"]: e for e in json.loads(path.read_text()).get("benches", [])}
        except (ValueError, AttributeError, KeyError, TypeError):
            old = {}  # unreadable: rewritten from this run
    for e in entries:
        old[e["module"]] = e
    return {"machine": platform.machine(), "python": platform.python_version(),
            "benches": [old[k] for k in sorted(old)]}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    ap.add_argument("--only", action="append", metavar="NAME",
                    help="run only this benchmark (flash or bench_flash); repeatable")
    ap.add_argument("--quick", action="store_true",
                    help="reduced sizes, to check that the benchmarks run (figures not judged)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results file (default bench/results.json)")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    a = ap.parse_args(argv)
    console = Console(width=max(Console().width, 132))
    try:
        mods = select(a.only)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    if a.list:
        for m in mods:
            print(m[6:])
        return 0
    entries = []
    for mod in mods:
        console.print(f"[dim]running {mod}{' (quick)' if a.quick else ''} ...[/dim]")
        e = run_module(mod, a.quick)
        if "error" in e:
            console.print(f"[red]{mod} failed:[/red]\n{e['error']}", markup=False, highlight=False)
        entries.append(e)
    console.print(table(entries))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(merge(a.out, entries), indent=1) + "\n")
    misses = sum(1 for e in entries for r in e["rows"] if r["met"] is False)
    console.print(f"{len(entries)} benchmark(s); {misses} target(s) missed; results in {a.out}")
    return 1 if any("error" in e for e in entries) else 0


if __name__ == "__main__":
    sys.exit(main())
