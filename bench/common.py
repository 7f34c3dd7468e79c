"""What every benchmark returns: rows of measured figures, each beside its target.

A benchmark module is `bench/bench_<name>.py` with

    TITLE = "short title"
    def run(quick: bool = False) -> list[Row]: ...

`quick` is the reduced size the test suite uses to prove the benchmark still runs
(never to judge a figure). `bench/run.py` discovers the modules, runs them in name
order and prints one table; `make bench` is `python -m bench.run`.
Figures are counts that do not drift where possible (wasmtime fuel, bytes allocated,
bytes written); wall-clock figures say so in their unit.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Row:
    name: str                  # what was measured, e.g. "keypress to unlock, 10,000 codes"
    value: float | int | str   # the measured figure
    unit: str                  # "VM instructions", "B/code", "ms (wall)", ...
    target: str = ""           # the target as text, e.g. "<= 24 B/code"; "" for context rows
    met: bool | None = None    # True/False against the target; None for context rows
    note: str = ""             # how it was measured, or by how much and why it is missed
    extra: dict = field(default_factory=dict)  # raw numbers for docs/performance.md

    def as_dict(self) -> dict:
        return {"name": self.name, "value": self.value, "unit": self.unit, "target": self.target,
                "met": self.met, "note": self.note, **({"extra": self.extra} if self.extra else {})}
