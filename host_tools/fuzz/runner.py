# The project's own fuzzer: seeded random inputs against the parsers the box trusts (MQTT
# packets, commands behind a valid MAC, its flash files, its configuration); docs/fuzzing.md.
#
#   python -m host_tools.fuzz.runner --target mqtt --seconds 10      # or --iterations N, --seed S
#   python -m host_tools.fuzz.runner --target all --seconds 60       # what `make fuzz` runs
#
# A target's one(rng) runs one input and lets only its module's own errors pass; any other
# exception, or a broken invariant (Finding), is a finding, named by where it came from.
# A target module's KNOWN names findings in files being fixed elsewhere: still reported,
# but they do not fail the run.
# Iteration i draws from random.Random("seed:i"): stateless targets replay one input with
# --start i --iterations 1; the command target's box carries state, so replay from 0.
import argparse
import importlib
import random
import sys
import time
import traceback
from pathlib import Path

from host_tools import virtual

virtual.install()   # the targets import memflash and fakenet by their device-side names

# name: (module, what it fuzzes)
TARGETS = {
    "mqtt": ("host_tools.fuzz.mqtt", "the MQTT packet decoder (parcelbox.mqtt.Decoder)"),
    "link": ("host_tools.fuzz.link", "the box's MQTT client (parcelbox.link.Link) on a fake broker"),
    "command": ("host_tools.fuzz.command", "commands and acks sealed with the right key (Remote)"),
    "flash": ("host_tools.fuzz.flash", "every file the box keeps, loaded by Box and Remote"),
    "config": ("host_tools.fuzz.config", "config.json and board.json through the boot checks"),
}
_MAX_FINDINGS = 20


# An invariant the target checks did not hold (the input is the runner's to report).
# key: what makes two findings one (default: the message's first line).
class Finding(Exception):
    def __init__(self, msg, key=None):
        super().__init__(msg)
        self.key = key


class Stats:
    def __init__(self, target):
        self.target = target
        self.iterations = 0
        self.seconds = 0.0
        self.findings = []  # dicts: key, what, iteration, input (a repr, cut short), known

    @property
    def rate(self):
        return self.iterations / self.seconds if self.seconds else 0.0

    # The findings not in the target's KNOWN.
    def new(self):
        return [f for f in self.findings if not f["known"]]

    def line(self):
        known = len(self.findings) - len(self.new())
        return "%-8s %8d inputs in %6.1f s: %7.0f/s, %d finding(s)%s" % (
            self.target, self.iterations, self.seconds, self.rate, len(self.new()),
            " (and %d known)" % known if known else "")


# Where an exception came from: its type and the innermost function of the firmware (or of
# anything, if none is), so one bug hit by many inputs is one finding, whatever its line.
def _key(e):
    if isinstance(e, Finding):
        return "Finding: " + (e.key or str(e).split("\n")[0][:120])
    return "%s in %s" % (type(e).__name__, where(e))


def guarded(fn, on_escape):
    """fn, wrapped for a harness: an OSError passes (the box handles those); any other
    exception goes to on_escape before it propagates (the box's broad except may hide it)."""
    def call(*a):
        try:
            return fn(*a)
        except OSError:
            raise
        except Exception as e:
            on_escape(e)
            raise
    return call


# The innermost firmware function an exception passed through: "module.function".
def where(e):
    frames = traceback.extract_tb(e.__traceback__)
    fw = [f for f in frames if "/firmware/" in f.filename] or frames
    return ("%s.%s" % (Path(fw[-1].filename).stem, fw[-1].name)) if fw else "?"


def load(name):
    if name not in TARGETS:
        raise SystemExit("no fuzz target %r; there are: %s" % (name, ", ".join(TARGETS)))
    return importlib.import_module(TARGETS[name][0])


# Fuzz `name` for `iterations` inputs or `seconds` (whichever is given; both: the first
# reached). `save`: a folder for the inputs of findings. Returns the Stats.
def run(name, seed=0, iterations=None, seconds=None, start=0, save=None, out=None):
    if iterations is None and seconds is None:
        raise ValueError("give iterations or seconds")
    mod = load(name)
    known = getattr(mod, "KNOWN", {})
    target = mod.Target(random.Random("%d:setup" % seed))
    st = Stats(name)
    seen = {}
    t0 = time.perf_counter()
    i = start
    while True:
        if iterations is not None and st.iterations >= iterations:
            break
        if seconds is not None and st.iterations % 16 == 0 and time.perf_counter() - t0 >= seconds:
            break
        rng = random.Random("%d:%d" % (seed, i))
        try:
            target.one(rng)
        except Exception as e:  # noqa: BLE001 - every escape is what we look for
            k = _key(e)
            if k not in seen and len(st.findings) < _MAX_FINDINGS:
                data = getattr(target, "last_input", None)
                f = {"key": k, "what": "".join(traceback.format_exception_only(type(e), e)).strip(),
                     "iteration": i, "seed": seed, "input": repr(data)[:400],
                     "trace": "".join(traceback.format_exception(type(e), e, e.__traceback__)[-6:]),
                     "known": known.get(k)}
                st.findings.append(f)
                if out:
                    out("  %s %s (seed %d, iteration %d)"
                        % ("known" if f["known"] else "finding", k, seed, i))
                if save is not None:
                    _save(save, name, seed, i, data)
            seen[k] = seen.get(k, 0) + 1
            reset = getattr(target, "reset", None)
            if reset is not None:
                reset(random.Random("%d:%d:reset" % (seed, i)))
        st.iterations += 1
        i += 1
    st.seconds = time.perf_counter() - t0
    for f in st.findings:
        f["hits"] = seen[f["key"]]
    return st


def _save(folder, name, seed, i, data):
    p = Path(folder)
    p.mkdir(parents=True, exist_ok=True)
    raw = data if isinstance(data, (bytes, bytearray)) else repr(data).encode()
    (p / ("%s-%d-%d.bin" % (name, seed, i))).write_bytes(raw)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m host_tools.fuzz.runner",
                                 description="Fuzz the box's parsers with seeded random inputs.")
    ap.add_argument("--target", default="all", help="one of %s, or all" % ", ".join(TARGETS))
    ap.add_argument("--seconds", type=float, help="time per target")
    ap.add_argument("--iterations", type=int, help="inputs per target")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0, help="first iteration (replays one input)")
    ap.add_argument("--save", help="folder for the inputs of findings")
    ap.add_argument("--list", action="store_true", help="list the targets")
    a = ap.parse_args(argv)
    if a.list:
        for n, (_, what) in TARGETS.items():
            print("%-8s %s" % (n, what))
        return 0
    if a.seconds is None and a.iterations is None:
        a.seconds = 10.0
    names = list(TARGETS) if a.target == "all" else [a.target]
    bad = 0
    for n in names:
        st = run(n, a.seed, a.iterations, a.seconds, a.start, a.save, out=print)
        print(st.line(), flush=True)
        for f in st.findings:
            if f["known"]:
                print("  known: %s: %d hit(s), first at iteration %d\n    %s"
                      % (f["key"], f["hits"], f["iteration"], f["known"]))
                continue
            bad += 1
            print("  %s: %d hit(s), first at iteration %d (seed %d)\n    %s\n    input %s\n%s"
                  % (f["key"], f["hits"], f["iteration"], f["seed"], f["what"], f["input"],
                     "    " + f["trace"].replace("\n", "\n    ")))
    return 1 if bad else 0


if __name__ == "__main__":
    # run as host_tools.fuzz.runner, not __main__: the targets raise host_tools.fuzz.runner.Finding
    from host_tools.fuzz import runner as _fuzz
    sys.exit(_fuzz.main())
