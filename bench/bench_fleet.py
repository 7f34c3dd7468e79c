"""A fleet of firmware boxes against one mosquitto and the backend SDK.

1,000 box cores (CPython; each its own flash folder, MQTT connection over TLS, broker
username and password under the docs/protocol.md section 9 ACL) run in two worker
processes, each one non-blocking loop over the firmware's own MQTT link
(bench/netlib.py). Several SDK consumers, each its own process, split the events on a
shared subscription into one SQLite ledger.

Phase 1, codes: backend threads issue a driver code (10 uses) and ten one-use recipient
codes per box; every add must come back `ok`. Phase 2, pickups: at each box a person
alternates deposit (driver code) and pickup (a recipient code), typing the code, opening
the door when the solenoid pulls, shutting it once the box saw it open.

Then the proof: the ledger against what the boxes emitted (every (box, seq) once, no
gap, nothing extra), the consumers' effects (a handler row per event, written in the
storing transaction: exactly one each), every recipient code used once and every driver
code ten times, on the box and in the ledger, every outbox empty.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import threading
import time
from pathlib import Path

from bench import netlib
from bench.common import Row
from host_tools.testing.wait import wait_for

TITLE = "fleet: boxes, codes and pickups (network)"

# The shortest pulse and cool-down allowed, so a person is quick; the longest open window,
# so a worker starved of CPU by the shared machine cannot make a door miss it.
SETTINGS = {"compartments": 1, "pulse_ms": 50, "cooldown_ms": 150, "open_window_ms": 600000}
N_CONSUMERS = 3
N_ISSUERS = 4
PACED_PER_BOX = 2     # of each box's pickups, offered at a steady rate for the latency


def run(quick: bool = False) -> list[Row]:
    if quick:
        return _run(boxes=20, pickups=5, workers=1, timeout=120)
    return _run(boxes=1000, pickups=10, workers=2, timeout=1800)


# ---------------------------------------------------------------- consumers

def _consumer_main(pipe, db: str, cfg, name: str) -> None:
    """One backend consumer process: stores and acks its share of the events; its
    handler writes one effect row per stored event inside the storing transaction."""
    from host_tools.backend.sdk import Consumer

    def effect(tx, ev):
        tx.execute("INSERT INTO bench_effects VALUES (?,?,?)", (ev.box, ev.seq, name))

    c = Consumer(db, cfg, name=name, handler=effect).start()
    pipe.send(("subscribed", c.subscribed.wait(30)))
    pipe.recv()
    c.stop()
    pipe.send(("stats", c.stats, time.process_time()))


class _ConsumerProc:
    def __init__(self, db, cfg, name):
        ctx = multiprocessing.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.proc = ctx.Process(target=_consumer_main, args=(child, db, cfg, name), daemon=True)
        self.proc.start()
        child.close()

    def wait_subscribed(self):
        if not self.pipe.poll(60) or not self.pipe.recv()[1]:
            raise RuntimeError("a consumer did not subscribe")

    def stop(self):
        try:
            self.pipe.send(("stop",))
            if self.pipe.poll(30):
                _, stats, cpu = self.pipe.recv()
                return stats, cpu
        except (OSError, EOFError):
            pass
        finally:
            self.proc.join(10)
            if self.proc.is_alive():
                self.proc.kill()
        return None, None


# ---------------------------------------------------------------- the run

def _run(boxes: int, pickups: int, workers: int, timeout: float) -> list[Row]:
    from host_tools.backend.sdk import Backend, Ledger

    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        tmp = Path(tmp)
        db = str(tmp / "ledger.db")
        ledger = Ledger(db)
        ledger.db.execute("CREATE TABLE bench_effects (box TEXT, seq INTEGER, consumer TEXT)")
        reg = Backend(ledger)
        creds = {}
        t0 = time.perf_counter()
        for i in range(boxes):
            rec = reg.register("fleet-%04d" % i, 1)
            creds[rec["box_id"]] = (rec["box_key"], rec["mqtt_password"])
        register_s = time.perf_counter() - t0
        names = sorted(creds)
        consumers_n = ["fleet-consumer-%d" % i for i in range(N_CONSUMERS)]
        issuers_n = ["fleet-backend-%d" % i for i in range(N_ISSUERS)]
        broker = netlib.start_broker(tmp / "broker", {b: v[1] for b, v in creds.items()},
                                     tuple(consumers_n + issuers_n))
        cons, box_workers = [], []
        fig = {"boxes": boxes, "pickups": pickups, "register_s": register_s,
               "loadavg_start": os.getloadavg()}
        try:
            for name in consumers_n:
                cons.append(_ConsumerProc(db, broker.sdk_config(name), name))
            for c in cons:
                c.wait_subscribed()
            cpu0 = _cpu(broker)
            rss0 = _rss(broker)
            t0 = time.perf_counter()
            for k in range(workers):
                mine = names[k::workers]
                box_workers.append(netlib.BoxWorker({
                    "boxes": [(b, creds[b][0], creds[b][1]) for b in mine], "host": broker.host,
                    "port": broker.port, "ca": str(broker.ca_path),
                    "flash": str(tmp / "flash"), "settings": SETTINGS, "mode": "event"}))
            for w in box_workers:
                w.expect("connected", timeout)
            fig["connect_s"] = time.perf_counter() - t0
            wait_for(lambda: _count(ledger, "SELECT count(*) FROM events WHERE type='boot'") >= boxes,
                     timeout=timeout, what="every box's boot event in the ledger", every=0.2,
                     error=RuntimeError)
            fig["boot_s"] = time.perf_counter() - t0
            fig["broker_rss_kb"] = _rss(broker)
            fig["broker_rss_kb_idle"] = rss0
            fig["broker_cpu_boot_s"] = _cpu(broker) - cpu0
            fig["msgs_at_boot"] = sum(v[0] for w in box_workers for b in w.report()["boxes"].values()
                                      for v in b["msgs"].values())
            cpu_run0 = _cpu(broker)

            # ---- phase 1: codes
            cpu0 = _cpu(broker)
            codes = _issue_all(db, broker, issuers_n, names, pickups)
            total_adds = boxes * (pickups + 1)
            _progress(ledger, "SELECT count(*) FROM commands WHERE op='add' AND status IS NOT NULL",
                      total_adds, timeout, "every add answered")
            fig["broker_cpu_codes_s"] = _cpu(broker) - cpu0
            lat = ledger.db.execute("SELECT done - sent, status, sent, done FROM commands "
                                    "WHERE op='add'").fetchall()
            fig["codes"] = len(lat)
            fig["codes_not_ok"] = sum(1 for r in lat if r[1] != 0)
            fig["codes_span_s"] = max(r[3] for r in lat) - min(r[2] for r in lat)
            fig["issue_applied"] = [r[0] for r in lat]

            # ---- phase 2: deposits and pickups, all offered at once (capacity)
            sat = pickups - PACED_PER_BOX
            cpu0 = _cpu(broker)
            n_events0 = _count(ledger, "SELECT count(*) FROM events")
            t_b0 = fig["t_b0"] = time.time()
            for w, k in zip(box_workers, range(workers)):
                w.jobs({b: _jobs(codes[b], 0, sat) for b in names[k::workers]})
            _progress(ledger, "SELECT count(*) FROM events WHERE type='pickup'",
                      boxes * sat, timeout, "every pickup in the ledger")
            t_b1 = time.time()
            _settle(box_workers, timeout, reports=False)
            fig["broker_cpu_pickups_s"] = _cpu(broker) - cpu0
            fig["broker_rss_kb_end"] = _rss(broker)
            last = ledger.db.execute("SELECT max(received) FROM events").fetchone()[0]
            fig["phase2_events"] = _count(ledger, "SELECT count(*) FROM events") - n_events0
            fig["phase2_s"] = last - t_b0
            fig["phase2_pickups"] = boxes * sat
            fig["pickups_s"] = t_b1 - t_b0
            fig["saturated_codes"] = {(b, c[0]) for b in names for c in codes[b][1][:sat]}

            # ---- phase 3: the rest paced at half the capacity phase 2 measured (latency)
            rate = 0.5 * fig["phase2_pickups"] / fig["pickups_s"]
            fig["paced_rate"] = rate
            t_c0 = time.monotonic()
            i = 0
            for r in range(sat, pickups):
                for k, b in enumerate(names):
                    when = t_c0 + i / rate
                    i += 1
                    delay = when - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    box_workers[k % workers].jobs({b: _jobs(codes[b], r, r + 1)})
            _progress(ledger, "SELECT count(*) FROM events WHERE type='pickup'",
                      boxes * pickups, timeout, "every paced pickup in the ledger")
            reports = _settle(box_workers, timeout)
            fig["broker_cpu_run_s"] = _cpu(broker) - cpu_run0
            fig["worker_cpu_s"] = sum(r["cpu_s"] for r in reports)
            fig["worker_longest_pass_s"] = max(r["longest_pass_s"] for r in reports)
            fig["loadavg_end"] = os.getloadavg()
        finally:
            stats = [c.stop() for c in cons]
            for w in box_workers:
                w.stop()
            broker.close()
        fig["consumers"] = [s for s, _ in stats]
        fig["consumer_cpu_s"] = sum(cpu or 0 for _, cpu in stats)
        proof = _prove(ledger, reports, codes, pickups, fig)
        ledger.close()
    return _rows(fig, proof)


def _issue_all(db, broker, users, names, pickups) -> dict:
    """Issue, from N_ISSUERS backend threads (each its own ledger connection and broker
    user), a driver code of `pickups` uses and `pickups` one-use recipient codes per box.
    Returns {box: (driver (id, code), [(id, code), ...])}; the codes stay in memory."""
    from host_tools.backend.sdk import Backend, Ledger

    out, errors = {}, []

    def issuer(user, mine):
        ledger = Ledger(db)
        try:
            with Backend(ledger, broker.sdk_config(user)) as be:
                for b in mine:
                    d = be.issue(b, "driver", comp=1, uses=pickups)
                    rs = [be.issue(b, "recipient", comp=1) for _ in range(pickups)]
                    if not d.sent or not all(r.sent for r in rs):
                        errors.append("an add for %s was not sent" % b)
                    out[b] = ((d.code_id, d.code), [(r.code_id, r.code) for r in rs])
        except Exception as e:  # reported below, with the thread's box
            errors.append("%s: %s" % (user, e))
        finally:
            ledger.close()

    threads = [threading.Thread(target=issuer, args=(u, names[i::len(users)]))
               for i, u in enumerate(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError("issuing failed: " + "; ".join(errors[:3]))
    return out


def _jobs(box_codes, first, end) -> list:
    """What the box's person types for recipient codes first..end-1: a parcel in (the
    driver code), then its recipient takes it out."""
    (_, driver), recipients = box_codes
    seq = []
    for _, code in recipients[first:end]:
        seq += [driver, code]
    return seq


def _settle(box_workers, timeout, reports=True) -> list:
    """Reports once every person is done and every outbox is empty (all events acked)."""
    end = time.monotonic() + timeout
    while True:
        got = [w.idle() for w in box_workers]
        if all(got):
            return [w.report() for w in box_workers] if reports else []
        if time.monotonic() > end:
            raise RuntimeError("the fleet did not settle within %g s" % timeout)
        time.sleep(1)


def _prove(ledger, reports, codes, pickups, fig) -> dict:
    """What the boxes emitted against what the ledger holds; every check is a count of
    violations (0 is the pass)."""
    from parcelbox import events as E

    emitted = {}
    emitted_at = {}
    unlocks = refusals = 0
    code_uses = {}
    msgs = {}
    bytes_in = bytes_out = 0
    for r in reports:
        for b, st in r["boxes"].items():
            for seq, kind, comp, code_id, t in st["emitted"]:
                emitted[(b, seq)] = (E.NAMES[kind], code_id)
                emitted_at[(b, seq)] = t
            unlocks += st["unlocks"]
            refusals += st["refusals"]
            for f in st["codes"]:
                code_uses[(b, f[0])] = f[3]
            for k, (n, size) in st["msgs"].items():
                m = msgs.setdefault(k, [0, 0])
                m[0] += n
                m[1] += size
            bytes_in += st["bytes_in"]
            bytes_out += st["bytes_out"]
    rows = ledger.db.execute("SELECT box, seq, type, code_id, received FROM events").fetchall()
    stored = {(b, s): (t, c) for b, s, t, c, _ in rows}
    # box emitted it (on flash, Box.on_event) -> stored in the ledger by a consumer
    pickup_lat = [r - emitted_at[(b, s)] for b, s, t, c, r in rows
                  if t == "pickup" and (b, s) in emitted_at and (b, c) not in fig["saturated_codes"]]
    pickup_lat_sat = [r - emitted_at[(b, s)] for b, s, t, c, r in rows
                      if t == "pickup" and (b, s) in emitted_at and (b, c) in fig["saturated_codes"]]
    event_lat = [r - emitted_at[(b, s)] for b, s, t, c, r in rows
                 if (b, s) in emitted_at and emitted_at[(b, s)] >= fig["t_b0"]]
    missing = [k for k in emitted if k not in stored]
    extra = [k for k in stored if k not in emitted]
    differ = [k for k in emitted if k in stored and stored[k] != emitted[k]]
    gaps = 0
    by_box = {}
    for b, s in stored:
        by_box.setdefault(b, []).append(s)
    for seqs in by_box.values():
        gaps += max(seqs) - len(seqs)           # seqs run 1..max: any hole shows here
    eff = ledger.db.execute("SELECT count(*), count(DISTINCT box || ':' || seq) "
                            "FROM bench_effects").fetchone()
    twice = eff[0] - eff[1]
    not_once = eff[0] - len(rows)
    pick = {}
    dep = {}
    for b, s, t, c, _ in rows:
        if t == "pickup":
            pick[(b, c)] = pick.get((b, c), 0) + 1
        elif t == "deposit":
            dep[(b, c)] = dep.get((b, c), 0) + 1
    status = {(b, i): st for b, i, st in ledger.db.execute("SELECT box, id, status FROM codes")}
    bad_recipient = bad_driver = 0
    for b, ((did, _), rs) in codes.items():
        if dep.get((b, did), 0) != pickups or status[(b, did)] != "used" or code_uses.get((b, did)) != 0:
            bad_driver += 1
        for rid, _ in rs:
            if pick.get((b, rid), 0) != 1 or status[(b, rid)] != "used" or code_uses.get((b, rid)) != 0:
                bad_recipient += 1
    n_boxes = len(codes)
    cstats = [s for s in fig["consumers"] if s]
    return {
        "emitted": len(emitted), "stored": len(rows), "missing": len(missing),
        "extra": len(extra), "differ": len(differ), "gaps": gaps, "effects_twice": twice,
        "effects_not_once": not_once, "bad_recipient_codes": bad_recipient,
        "bad_driver_codes": bad_driver, "pickups": sum(pick.values()),
        "deposits": sum(dep.values()), "unlocks": unlocks,
        "unlocks_expected": n_boxes * pickups * 2, "refusals": refusals,
        "received": sum(s["received"] for s in cstats),
        "duplicates": sum(s["duplicates"] for s in cstats),
        "refused": sum(s["refused"] for s in cstats), "errors": sum(s["errors"] for s in cstats),
        "per_consumer_stored": [s["stored"] for s in cstats],
        "msgs": msgs, "bytes_in": bytes_in, "bytes_out": bytes_out,
        "pickup_latency": pickup_lat, "pickup_latency_saturated": pickup_lat_sat,
        "event_latency": event_lat,
    }


def _rows(fig: dict, proof: dict) -> list[Row]:
    p, ms = netlib.percentile, netlib.ms
    boxes, pickups = fig["boxes"], fig["boxes"] * fig["pickups"]
    codes = fig["codes"]
    lost = proof["missing"] + proof["differ"] + proof["gaps"]
    double = proof["extra"] + proof["effects_twice"] + proof["effects_not_once"]
    misuse = proof["bad_recipient_codes"] + proof["bad_driver_codes"] + fig["codes_not_ok"] + (
        proof["unlocks"] != proof["unlocks_expected"]) + proof["errors"] + proof["refused"]
    full = boxes >= 1000 and codes >= 10000 and proof["pickups"] >= 10000
    msgs = proof["msgs"]
    n_msgs = sum(v[0] for v in msgs.values())
    run_msgs = n_msgs - fig["msgs_at_boot"]
    rows = [
        Row("fleet: %d boxes, %d codes, %d pickups: lost / double-processed / misused"
            % (boxes, codes, proof["pickups"]), "%d / %d / %d" % (lost, double, misuse),
            "events, codes", target="0 / 0 / 0 at 1,000 boxes, 10,000 codes, 10,000 pickups",
            met=lost == 0 and double == 0 and misuse == 0 and full,
            note="%d events emitted by the boxes, %d in the ledger; %d duplicates delivered "
                 "and dropped by (box, seq); every code's uses on box and ledger checked; "
                 "%d codes typed again (box busy or window missed)" % (
                     proof["emitted"], proof["stored"], proof["duplicates"], proof["refusals"])),
        Row("fleet: codes issued -> applied", round(codes / fig["codes_span_s"], 1),
            "codes/s (wall)", note="%d issuer threads; first command recorded to last result "
            "stored, %.1f s" % (N_ISSUERS, fig["codes_span_s"])),
        Row("fleet: issue -> applied p50 / p99", "%.1f / %.1f" % (
            ms(p(fig["issue_applied"], 50)), ms(p(fig["issue_applied"], 99))), "ms (wall)",
            note="ledger commands.sent to the result's commands.done"),
        Row("fleet: events stored (deposits and pickups)", round(
            fig["phase2_events"] / fig["phase2_s"], 1), "events/s (wall)",
            note="every box's deposits and pickups offered at once: %d events in %.1f s by %d "
                 "consumers on a shared subscription; %.1f pickups/s" % (
                     fig["phase2_events"], fig["phase2_s"], N_CONSUMERS,
                     fig["phase2_pickups"] / fig["pickups_s"])),
        Row("fleet: pickup -> ledger p50 / p99, paced", "%.1f / %.1f" % (
            ms(p(proof["pickup_latency"], 50)), ms(p(proof["pickup_latency"], 99))),
            "ms (wall)", note="the box wrote the pickup event to flash -> a consumer stored it; "
            "%d pickup cycles offered at %.1f/s, half the capacity measured above" % (
                len(proof["pickup_latency"]), fig["paced_rate"])),
        Row("fleet: pickup -> ledger p50 / p99, saturated", "%.1f / %.1f" % (
            ms(p(proof["pickup_latency_saturated"], 50)),
            ms(p(proof["pickup_latency_saturated"], 99))), "ms (wall)",
            note="while every box pushes at once: the time the backlog takes to drain, "
                 "not a service time"),
        Row("fleet: broker CPU per box message", round(fig["broker_cpu_run_s"] / run_msgs * 1e6, 1),
            "us/message", note="mosquitto user+system CPU from the first code to the last ack "
            "/ the %d PUBLISHes the boxes sent or received then (each passes the broker once "
            "in, once out, with its PUBACKs, over TLS)" % run_msgs),
        Row("fleet: broker CPU per box connection", round(fig["broker_cpu_boot_s"] / boxes * 1e3, 2),
            "ms/connect", note="TLS handshake, password check, persistent session, 2 "
            "subscriptions, status, state and boot event; %d boxes in %.1f s" % (
                boxes, fig["connect_s"])),
        Row("fleet: CPU per event, boxes / consumers", "%.2f / %.2f" % (
            fig["worker_cpu_s"] / proof["emitted"] * 1e3, fig["consumer_cpu_s"] / proof["received"] * 1e3),
            "ms/event", note="box worker processes (firmware core, link, TLS, flash files) over "
            "every event emitted; consumer processes (MAC, SQLite commit, ack) over every event "
            "received"),
        Row("fleet: broker memory per connected box", round(
            (fig["broker_rss_kb"] - fig["broker_rss_kb_idle"]) * 1024 / boxes), "B/connection",
            note="mosquitto VmRSS growth from no box to every box connected, each with its "
                 "persistent session and 2 subscriptions (%d -> %d kB)" % (
                     fig["broker_rss_kb_idle"], fig["broker_rss_kb"])),
    ]
    per_cycle = pickups and {k: round(v[0] / pickups, 2) for k, v in msgs.items()}
    sizes = {k: round(v[1] / v[0], 1) for k, v in msgs.items() if v[0]}
    rows[0].extra = {k: v for k, v in fig.items()
                     if k not in ("issue_applied", "consumers", "saturated_codes")}
    rows[0].extra.update({k: v for k, v in proof.items() if k not in (
        "pickup_latency", "pickup_latency_saturated", "event_latency", "msgs")})
    rows[0].extra.update({"msgs": msgs, "msgs_per_pickup": per_cycle, "payload_bytes": sizes,
                          "event_latency_p99_ms": ms(p(proof["event_latency"], 99))
                          if proof["event_latency"] else None})
    return rows


# ---------------------------------------------------------------- helpers

def _count(ledger, q) -> int:
    return ledger.db.execute(q).fetchone()[0]


def _progress(ledger, q, want, timeout, what, stall=60.0):
    """Wait until the count `q` reaches `want`; fail early when it stops moving."""
    end = time.monotonic() + timeout
    last, moved = -1, time.monotonic()
    while True:
        n = _count(ledger, q)
        if n >= want:
            return
        now = time.monotonic()
        if n != last:
            last, moved = n, now
        if now > end or now - moved > stall:
            kinds = dict(ledger.db.execute("SELECT type, count(*) FROM events GROUP BY type"))
            raise RuntimeError("timed out waiting for %s: %d of %d (events %s)" % (
                what, n, want, kinds))
        time.sleep(0.2)


def _cpu(broker) -> float:
    """CPU seconds (user + system) the mosquitto process has used."""
    import os

    with open("/proc/%d/stat" % broker._proc.pid) as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def _rss(broker) -> int:
    with open("/proc/%d/status" % broker._proc.pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


if __name__ == "__main__":
    import sys

    for r in run(quick="--quick" in sys.argv):
        print(r.as_dict())
