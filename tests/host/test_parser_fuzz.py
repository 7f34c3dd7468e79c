# The file parsers a user feeds, fuzzed: whatever the bytes of a scenario or a board file, only
# the parser's own error comes out (ScenarioError; a board's errors listed, BoardFileError).
# Mutations from host_tools/fuzz/mutate.py, a fixed seed, a bounded number of cases.
import json
import random
from pathlib import Path

import pytest

from host_tools import boards
from host_tools.fuzz import mutate
from host_tools.sim import scenario as sc

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = [p.read_bytes() for p in sorted((ROOT / "scenarios").glob("*.txt"))]
BOARDS = [p.read_bytes() for p in sorted((ROOT / "boards").glob("*.json"))]
CASES = 600

# Words and numbers a scenario line is made of, and what breaks number parsers.
_WORDS = ("wait", "at", "press", "type", "door", "tamper", "network", "broker", "power", "clock",
          "backend", "expect", "issue", "revoke", "unlock", "sync", "comp", "uses", "valid",
          "from", "within", "arg", "event", "stored", "no", "led", "open", "close", "+",
          "9" * 400, "9" * 400 + "s", "1e999s", "0", "-1", "\u0665", "\u00b2", "1.5s", "#",
          "\x00", "\ud800", "unlimited", "wrong", "nowait", "ledger", "complete")


def _scenario_case(rng: random.Random) -> bytes:
    if rng.random() < 0.3:   # a line of random words: reaches every verb's arguments
        words = [rng.choice(_WORDS) for _ in range(rng.randrange(1, 8))]
        return " ".join(words).encode("utf-8", "surrogatepass")
    data = rng.choice(SCENARIOS)
    for _ in range(rng.randrange(1, 6)):
        data = mutate.mutate_bytes(rng, data, SCENARIOS)
    return bytes(data)


def test_a_scenario_file_of_any_bytes_gives_steps_or_a_scenario_error(tmp_path):
    rng = random.Random(16)
    f = tmp_path / "s.txt"
    outcomes = {"steps": 0, "error": 0}
    for _ in range(CASES):
        data = _scenario_case(rng)
        f.write_bytes(data)
        try:
            steps = sc.load(f)
        except sc.ScenarioError as e:
            outcomes["error"] += 1
            assert str(e).startswith(str(f)) and len(str(e)) < 2000, data
        else:
            outcomes["steps"] += 1
            for s in steps:
                json.dumps(s.args)   # what the trace writes
                assert all(not isinstance(v, int) or abs(v) <= sc.MAX_DURATION
                           for v in s.args.values()), (data, s)
    assert outcomes["steps"] > 30 and outcomes["error"] > 30, outcomes


def _board_value(rng: random.Random, depth: int = 0):
    k = rng.randrange(9)
    if k == 0:
        return rng.choice(mutate.BOUNDARY_INTS)
    if k == 1:
        return rng.choice(mutate.STRINGS + ("D5", "D\u0665", "GPIO\u00b2", "GPIO5", "D5\u00e9"))
    if k == 2:
        return rng.choice((None, True, False, 1.5, float("inf"), float("nan"), -0.0))
    if k == 3 and depth < 3:
        return [_board_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    if k == 4 and depth < 3:
        return {rng.choice(mutate.STRINGS): _board_value(rng, depth + 1) for _ in range(rng.randrange(4))}
    return rng.randrange(-2, 50)


def _replace_somewhere(rng: random.Random, node, value):
    """The board with one value (at any depth) replaced."""
    if isinstance(node, dict) and node:
        k = rng.choice(list(node))
        if rng.random() < 0.4 or not isinstance(node[k], (dict, list)):
            node[k] = value
        else:
            _replace_somewhere(rng, node[k], value)
    elif isinstance(node, list) and node:
        i = rng.randrange(len(node))
        if rng.random() < 0.4 or not isinstance(node[i], (dict, list)):
            node[i] = value
        else:
            _replace_somewhere(rng, node[i], value)


def _board_case(rng: random.Random) -> bytes:
    data = rng.choice(BOARDS)
    if rng.random() < 0.6:   # a valid JSON board with values of the wrong kind
        b = json.loads(data)
        for _ in range(rng.randrange(1, 4)):
            _replace_somewhere(rng, b, _board_value(rng))
        text = json.dumps(b, ensure_ascii=rng.random() < 0.5)
        if rng.random() < 0.1:   # a value nested deeper than json's own recursion limit
            d = rng.choice((200, 990, 5000))
            text = text[:-1] + ', "keypad": ' + "[" * d + "]" * d + "}"
        return text.encode("utf-8", "surrogatepass")
    for _ in range(rng.randrange(1, 5)):
        data = mutate.mutate_bytes(rng, data, BOARDS)
    return bytes(data)


def test_a_board_file_of_any_bytes_is_checked_without_an_exception(tmp_path):
    rng = random.Random(16)
    f = tmp_path / "b.json"
    ok = bad = 0
    for _ in range(CASES):
        data = _board_case(rng)
        f.write_bytes(data)
        r = boards.check_file(f)        # never raises: every problem is listed
        for msg in r.errors + r.warnings:
            msg.encode("utf-8")         # prints anywhere: no lone surrogate in a message
        if r.ok:
            ok += 1
            assert boards.device_board(f) == r.board
            json.dumps(r.board)
        else:
            bad += 1
            assert r.errors, data
            with pytest.raises(boards.BoardFileError):
                boards.device_board(f)
            with pytest.raises(sc.ScenarioError):
                sc.board_from_file(f)
    assert ok > 5 and bad > 300, (ok, bad)
