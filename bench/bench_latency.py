"""Code activation latency against a bare MQTT round trip,
same broker.

A code's activation runs from `Backend.issue()` (ledger transaction, sealed `add`
command, QoS 1 publish) until a consumer has stored the box's `result` event for that
command (docs/protocol.md sections 5-6): the moment the backend knows the box holds
the code. The bare round trip is a paho client publishing at QoS 1 to a paho client
that echoes it back at QoS 1. Both go through one private mosquitto (TLS, the section 9
ACL), interleaved one for one so machine noise hits both alike. Wall-clock, so the
figures vary with the machine's load; the ratio is the point.

The boxes are the firmware as the linux port runs it (bench/appbox.py: its boot, then
parcelbox.app's superloop with its Link, one process per box): the loop's idle returns
when the link's socket has data. A second pass, same sizes, lends the
port a plain sleep (at most 10 ms, the loop before that change), which shows what the
wake saves.
"""

from __future__ import annotations

import queue
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from bench.common import Row
from bench import appbox, netlib

TITLE = "code activation latency (network)"

N_BOXES = 10          # codes round-robin over them: a box holds at most 256
TARGET_RATIO = 2.0    # activation p99 <= 2 x bare round trip p99


def run(quick: bool = False) -> list[Row]:
    n = 40 if quick else 1000
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        woken, mode = _measure(Path(tmp) / "woken", n, True)
        sleeping, _ = _measure(Path(tmp) / "sleeping", n, False)
    return _rows(n, woken, sleeping, mode)


def _rows(n: int, a: dict, b: dict, commit_mode: str) -> list[Row]:
    p = netlib.percentile
    act99, bare99 = p(a["activation"], 99), p(a["bare"], 99)
    ratio = act99 / bare99
    note = ("Backend.issue() to the box's result stored by a consumer, %d codes over %d "
            "firmware boxes (the linux port's boot and superloop, one process each, link "
            "over TLS, the loop woken by its socket, the ESP32's Storage: no fsync); "
            "interleaved with the bare round trip" % (n, N_BOXES))
    rows = [
        Row("code activation p50", netlib.ms(p(a["activation"], 50)), "ms (wall)", note=note),
        Row("code activation p99", netlib.ms(act99), "ms (wall)"),
        Row("bare MQTT round trip p50", netlib.ms(p(a["bare"], 50)), "ms (wall)",
            note="paho QoS 1 publish -> paho echo -> QoS 1 reply, same broker, same run, "
                 "TCP_NODELAY on both clients"),
        Row("bare MQTT round trip p99", netlib.ms(bare99), "ms (wall)"),
        Row("bare round trip p50/p99, paho's default (Nagle on)", "%.2f / %.2f" % (
            netlib.ms(p(a["bare_nagle"], 50)), netlib.ms(p(a["bare_nagle"], 99))), "ms (wall)",
            note="paho 2.2 does not set TCP_NODELAY; the echo's PUBACK and reply then "
                 "wait for the broker's delayed ACK"),
        Row("activation p99 / bare p99", round(ratio, 2), "x", target="<= 2 x",
            met=ratio <= TARGET_RATIO,
            note=_why(a) if ratio > TARGET_RATIO else ""),
    ]
    for name, key in (("backend: ledger transactions in issue()", "tx"),
                      ("backend: issue() returned (tx + publish + PUBACK)", "issue"),
                      ("issue() start to the box reading the command", "to_box"),
                      ("box applies the add (flash, result event)", "apply"),
                      ("result event: box to consumer", "result"),
                      ("consumer verifies, stores (SQLite commit), acks", "store")):
        rows.append(Row("  " + name + " p50/p99", "%.2f / %.2f" % (
            netlib.ms(p(a[key], 50)), netlib.ms(p(a[key], 99))), "ms (wall)"))
    rows.append(Row("  SQLite write transaction on the ledger file p50/p99", "%.2f / %.2f" % (
        netlib.ms(p(a["commit"], 50)), netlib.ms(p(a["commit"], 99))), "ms (wall)",
        note="BEGIN IMMEDIATE, one INSERT, COMMIT (%s); an activation holds two: the "
             "backend's and the consumer's" % commit_mode))
    for name, key in (("code activation p50/p99, loop not woken (sleeps <= %d ms)"
                       % netlib.SCAN_MS, "activation"),
                      ("  bare round trip p50/p99 in that pass", "bare"),
                      ("  issue() start to the box reading the command p50/p99", "to_box")):
        rows.append(Row(name, "%.2f / %.2f" % (netlib.ms(p(b[key], 50)), netlib.ms(p(b[key], 99))),
                        "ms (wall)"))
    rows[-3].note = ("second pass, same sizes: the port lent a plain sleep, as the loop was "
                     "before it woke on the link's socket; ratio p99/bare p99 %.2f" % (
                         p(b["activation"], 99) / p(b["bare"], 99)))
    for r in rows:
        r.extra = {}
    rows[0].extra = {"woken": _summary(a), "sleeping": _summary(b)}
    return rows


def _summary(d: dict) -> dict:
    p = netlib.percentile
    return {k: {"p50_ms": netlib.ms(p(v, 50)), "p99_ms": netlib.ms(p(v, 99)),
                "max_ms": netlib.ms(max(v)), "n": len(v)} for k, v in d.items()}


def _why(a: dict) -> str:
    p = netlib.percentile
    parts = {"ledger tx": p(a["tx"], 99), "to box": p(a["to_box"], 99),
             "box apply": p(a["apply"], 99), "result trip": p(a["result"], 99),
             "consumer store": p(a["store"], 99)}
    worst = sorted(parts.items(), key=lambda kv: -kv[1])[:3]
    return "missed; largest p99 parts: " + ", ".join("%s %.2f ms" % (k, v * 1000) for k, v in worst)


# ---------------------------------------------------------------- one pass

class _TimedLedger:
    """Times every transaction the backend runs (BEGIN IMMEDIATE .. COMMIT)."""

    def __init__(self, ledger):
        self._l = ledger
        self.spent = 0.0

    def __getattr__(self, name):
        return getattr(self._l, name)

    @contextmanager
    def tx(self):
        t0 = time.perf_counter()
        try:
            with self._l.tx() as db:
                yield db
        finally:
            self.spent += time.perf_counter() - t0


def _consumer_class():
    from host_tools.backend.sdk import Consumer

    class TimedConsumer(Consumer):
        """A Consumer that reports each stored `result`: (box, command seq, arrival,
        stored) on `results`, timed around the SDK's own message handling."""

        def __init__(self, *a, **kw):
            super().__init__(*a, handler=self._seen, **kw)
            self.results = queue.Queue()
            self._last = None

        def _seen(self, db, ev):
            self._last = ev

        def _on_message(self, c, userdata, msg):
            t0 = time.perf_counter()
            self._last = None
            super()._on_message(c, userdata, msg)
            ev = self._last
            if ev is not None and ev.type == "result":
                self.results.put((ev.box, ev.id, t0, time.perf_counter()))

    return TimedConsumer


def _measure(tmp: Path, n: int, wake: bool, durable: bool = False) -> dict:
    from host_tools.backend.sdk import Backend, Ledger

    tmp.mkdir(parents=True)
    ledger = Ledger(tmp / "ledger.db")
    boxes = {}
    for i in range(N_BOXES):
        rec = Backend(ledger).register("lat-%02d" % i, appbox.COMPARTMENTS)
        boxes[rec["box_id"]] = (rec["box_key"], rec["mqtt_password"])
    broker = netlib.start_broker(tmp / "broker", {b: v[1] for b, v in boxes.items()},
                                 ("bench-backend", "bench-consumer", "bench-ask", "bench-echo",
                                  "bench-ask-nagle", "bench-echo-nagle"))
    worker = consumer = backend = None
    pairs = []
    try:
        consumer = _consumer_class()(tmp / "ledger.db", broker.sdk_config("bench-consumer"),
                                     name="bench-consumer").start()
        if not consumer.subscribed.wait(10):
            raise RuntimeError("the consumer did not subscribe")
        states = {b: appbox.provision(tmp / "state" / b, b, bytes.fromhex(v[0]), v[1],
                                      broker.host, broker.port, broker.ca_path)
                  for b, v in boxes.items()}
        worker = appbox.AppBoxes(states, wake, durable)
        worker.expect("connected", 60)
        timed = _TimedLedger(ledger)
        backend = Backend(timed, broker.sdk_config("bench-backend"))
        ask, echo, replies, req, rep = _echo_pair(broker, "", True)
        pairs.append((ask, echo))
        ask2, echo2, replies2, req2, _ = _echo_pair(broker, "-nagle", False)
        pairs.append((ask2, echo2))
        names = sorted(boxes)
        out = {k: [] for k in ("activation", "bare", "bare_nagle", "tx", "issue", "to_box", "apply",
                               "result", "store")}
        marks = []
        # warm up both paths (TLS session state, SQLite pages, first-use imports)
        for i in range(3):
            _activate(backend, consumer, names[i % N_BOXES], timed)
            _bare(ask, replies, req, b"w" * 300)
            _bare(ask2, replies2, req2, b"w" * 300)
        payload = None
        for i in range(n):
            box = names[i % N_BOXES]
            if i % 2:   # the order alternates, so neither always follows the other
                out["bare"].append(_bare(ask, replies, req, payload))
                out["bare_nagle"].append(_bare(ask2, replies2, req2, payload))
            m = _activate(backend, consumer, box, timed)
            marks.append(m)
            if payload is None:
                payload = b"x" * m["size"]    # the bare message as big as the add command
            if not i % 2:
                out["bare"].append(_bare(ask, replies, req, payload))
                out["bare_nagle"].append(_bare(ask2, replies2, req2, payload))
        report = worker.report()
        failed = {b: r["errors"] for b, r in report["boxes"].items() if r["errors"]}
        if failed:
            raise RuntimeError("box loop errors: %r" % failed)
        out["commit"], commit_mode = _commits(tmp / "ledger.db", 200)
        # box-side marks: the k-th command a box applied is its k-th code here (3 warm-ups)
        seen = {b: 0 for b in names}
        for i in range(3):
            seen[names[i % N_BOXES]] += 1
        for m in marks:
            k = seen[m["box"]]
            seen[m["box"]] += 1
            b0, b1 = report["boxes"][m["box"]]["applied"][k]
            out["activation"].append(m["stored"] - m["t0"])
            out["tx"].append(m["tx"])
            out["issue"].append(m["t1"] - m["t0"])
            out["to_box"].append(b0 - m["t0"])
            out["apply"].append(b1 - b0)
            out["result"].append(m["arrived"] - b1)
            out["store"].append(m["stored"] - m["arrived"])
        return out, commit_mode
    finally:
        for pair in pairs:
            for c in pair:
                c.close()
        if backend is not None:
            backend.close()
        if consumer is not None:
            consumer.stop()
        if worker is not None:
            worker.stop()
        broker.close()
        ledger.close()


def _commits(path, n: int) -> list:
    """Seconds per bare write transaction (BEGIN IMMEDIATE, one small INSERT, COMMIT) on
    the ledger's own file, in its WAL mode: the floor under every ledger step."""
    import sqlite3

    db = sqlite3.connect(str(path), isolation_level=None, timeout=30)
    try:
        db.execute("CREATE TABLE IF NOT EXISTS bench_commit (n INTEGER)")
        out = []
        for i in range(n):
            t0 = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO bench_commit VALUES (?)", (i,))
            db.execute("COMMIT")
            out.append(time.perf_counter() - t0)
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
        sync = ("OFF", "NORMAL", "FULL", "EXTRA")[db.execute("PRAGMA synchronous").fetchone()[0]]
        return out, "%s, synchronous=%s" % (mode.upper(), sync)
    finally:
        db.close()


def _activate(backend, consumer, box: str, timed) -> dict:
    timed.spent = 0.0
    t0 = time.perf_counter()
    issued = backend.issue(box, "recipient", comp=1)
    t1 = time.perf_counter()
    if not issued.sent:
        raise RuntimeError("the broker did not take the add command")
    while True:
        try:
            b, seq, arrived, stored = consumer.results.get(timeout=10)
        except queue.Empty:
            raise RuntimeError("no result for command %d of %s within 10 s" % (
                issued.cmd_seq, box)) from None
        if (b, seq) == (box, issued.cmd_seq):
            break
    body = backend.ledger.db.execute("SELECT body FROM commands WHERE box=? AND seq=?",
                                     (box, issued.cmd_seq)).fetchone()[0]
    return {"box": box, "t0": t0, "t1": t1, "arrived": arrived, "stored": stored,
            "tx": timed.spent, "size": 65 + len(body)}


def _echo_pair(broker, suffix: str, nodelay: bool):
    """A paho client that echoes every message on `req` to `rep`, QoS 1 both ways, and
    one that asks; both TLS, backend users of the private broker. paho 2.2 leaves Nagle
    on; with `nodelay` both set TCP_NODELAY, as mosquitto and the firmware's link do."""
    req, rep = "parcelbox/v1/bench-echo%s/req" % suffix, "parcelbox/v1/bench-echo%s/rep" % suffix
    echo = broker.paho_client("bench-echo" + suffix)
    echo.on_message = lambda c, u, msg: c.publish(rep, msg.payload, qos=1)
    if echo.subscribe_wait(req) != [1]:
        raise RuntimeError("echo subscription refused")
    ask = broker.paho_client("bench-ask" + suffix)
    if nodelay:
        for c in (echo, ask):
            c.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    replies = queue.Queue()
    ask.on_message = lambda c, u, msg: replies.put(time.perf_counter())
    if ask.subscribe_wait(rep) != [1]:
        raise RuntimeError("reply subscription refused")
    return ask, echo, replies, req, rep


def _bare(ask, replies, req, payload) -> float:
    t0 = time.perf_counter()
    ask.publish(req, payload, qos=1)
    try:
        t1 = replies.get(timeout=10)
    except queue.Empty:
        raise RuntimeError("no echo within 10 s") from None
    return t1 - t0


if __name__ == "__main__":
    for r in run(quick="--quick" in __import__("sys").argv):
        print(r.as_dict())
