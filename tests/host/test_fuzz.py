# The fuzzer (host_tools/fuzz/runner.py): every target on a fixed budget of inputs and seeds finds
# nothing new, a bug planted in each parser is found, and the core's findings stay fixed.
import json
import struct

import pytest

from host_tools.fuzz import runner as fuzz
from host_tools.fuzz.mutate import mutate, nested
from memflash import MemStorage
from parcelbox import config, devconf, mqtt
from parcelbox.box import Box
from parcelbox.remote import Remote

# inputs per target: a second or two each on the 2-core CI machine
BUDGET = {"mqtt": 3000, "link": 800, "command": 1000, "flash": 600, "config": 1200}


def _found(st):
    return ["%s (iteration %d): %s" % (f["key"], f["iteration"], f["what"]) for f in st.new()]


@pytest.mark.parametrize("name", list(fuzz.TARGETS))
def test_each_target_finds_nothing_new_on_its_fixed_budget(name):
    st = fuzz.run(name, seed=1, iterations=BUDGET[name])
    assert st.iterations == BUDGET[name]
    assert _found(st) == []


def test_a_seed_replays_the_same_inputs():
    a = fuzz.run("mqtt", seed=5, iterations=50)
    b = fuzz.run("mqtt", seed=5, iterations=50)
    assert a.findings == b.findings
    t1 = fuzz.load("config").Target(None)
    t2 = fuzz.load("config").Target(None)
    import random
    for i in range(20):
        t1.one(random.Random("5:%d" % i))
        t2.one(random.Random("5:%d" % i))
        assert t1.last_input == t2.last_input


def test_mutations_are_deterministic_and_change_the_input():
    import random
    data = b'{"v":1,"box":"box-7","seq":1,"op":"state"}'
    outs = [mutate(random.Random(i), data) for i in range(200)]
    assert outs == [mutate(random.Random(i), data) for i in range(200)]
    assert sum(o != data for o in outs) > 190
    assert nested(random.Random(1), 50).count("[") + nested(random.Random(1), 50).count("{") >= 50


# ---- planted bugs: the harness must see each one ----------------------------------------

def test_a_decoder_that_raises_keyerror_is_a_finding(monkeypatch):
    real = mqtt.Decoder.next

    def planted(self):
        k = real(self)
        if k == mqtt.PINGRESP:
            raise KeyError("planted")
        return k
    monkeypatch.setattr(mqtt.Decoder, "next", planted)
    st = fuzz.run("mqtt", seed=1, iterations=300)
    assert any(f["key"].startswith("KeyError in") for f in st.new())


def test_a_decoder_that_reports_a_wrong_field_is_a_finding(monkeypatch):
    real = mqtt.Decoder._publish

    def planted(self, flags, i, n):
        k = real(self, flags, i, n)
        if k == mqtt.PUBLISH:
            self.retain = not self.retain
        return k
    monkeypatch.setattr(mqtt.Decoder, "_publish", planted)
    st = fuzz.run("mqtt", seed=1, iterations=300)
    assert any("field retain" in f["what"] for f in st.new())


def test_a_link_that_lets_another_exception_out_of_step_is_a_finding(monkeypatch):
    from parcelbox.link import Link
    real = Link._packet

    def planted(self, t, now):
        if t == mqtt.PINGRESP:
            raise IndexError("planted")
        return real(self, t, now)
    monkeypatch.setattr(Link, "_packet", planted)
    st = fuzz.run("link", seed=1, iterations=300)
    assert any(f["key"].startswith("IndexError in") for f in st.new()), _found(st)


def test_a_link_that_publishes_past_its_flight_cap_is_a_finding(monkeypatch):
    from parcelbox.link import Link
    monkeypatch.setattr(Link, "_room", lambda self: self._qbytes < 2048)  # the cap forgotten
    st = fuzz.run("link", seed=1, iterations=300)
    assert any("in flight, more than" in f["what"] for f in st.new()), _found(st)


def test_an_exception_that_receive_would_hide_as_malformed_is_a_finding(monkeypatch):
    # Remote.receive turns it into a `malformed` rejection; the harness's wrap sees it
    real = Remote._apply

    def planted(self, op, a, seq, now):
        if op == 11:  # time
            raise TypeError("planted")
        return real(self, op, a, seq, now)
    monkeypatch.setattr(Remote, "_apply", planted)
    st = fuzz.run("command", seed=1, iterations=300)
    assert any(f["key"].startswith("TypeError in remote.") for f in st.new()), _found(st)


def test_a_command_that_leaves_no_trace_is_a_finding(monkeypatch):
    monkeypatch.setattr(Remote, "_reject", lambda self, why, seq, now: None)
    st = fuzz.run("command", seed=1, iterations=200)
    assert any("left no result" in f["what"] for f in st.new())


def test_a_loader_that_raises_on_damage_is_a_finding(monkeypatch):
    from parcelbox import remotestore
    real = remotestore.load_wire

    def planted(storage):
        data = storage.read(remotestore.WIRE)
        if data is not None and len(data) != 84:
            raise IndexError("planted")
        return real(storage)
    monkeypatch.setattr(remotestore, "load_wire", planted)
    monkeypatch.setattr("parcelbox.remote.load_wire", planted)
    st = fuzz.run("flash", seed=1, iterations=400)
    assert any(f["key"].startswith("IndexError in remote.") for f in st.new()), _found(st)


def test_a_config_check_that_lets_a_bad_keypad_through_is_a_finding(monkeypatch):
    # the bug fixed in config.make: the core's Keypad refuses what the checks passed
    monkeypatch.setattr(config, "_MAX_KEYS", 64)
    st = fuzz.run("config", seed=1, iterations=1500)
    assert any(f["key"] == "ValueError in keypad.__init__" for f in st.new()), _found(st)


def test_a_config_check_that_raises_another_error_is_a_finding(monkeypatch):
    real = devconf.load_config

    def planted(storage):
        c = real(storage)
        if c["broker"]["tls"] is False:
            raise KeyError("planted")
        return c
    monkeypatch.setattr(devconf, "load_config", planted)
    st = fuzz.run("config", seed=1, iterations=300)
    assert any(f["key"].startswith("KeyError in") for f in st.new()), _found(st)


# ---- the core's findings (fixed in 71b0473, listed as KNOWN until then): their minimal ----
# ---- reproducers, kept as regression tests ----------------------------------------------

def test_a_command_nested_too_deep_is_refused_without_an_exception():
    # RecursionError (CPython's json, the linux port) reached receive()'s broad except
    import hashlib
    import hmac
    box = Box(MemStorage(), bytes(range(32)))
    r = Remote(box, "box-7", bytes(range(32)))
    escaped = []
    real = r._command

    def guard(*a):
        try:
            return real(*a)
        except Exception as e:
            escaped.append(e)
            raise
    r._command = guard
    body = b"[" * 1500 + b"]" * 1500
    mac = hmac.new(r._cmd_key, r.topic_cmd.encode() + b"\n" + body, hashlib.sha256).hexdigest()
    r.receive(r.topic_cmd, mac.encode() + b" " + body, 0)
    assert escaped == []


def test_settings_nested_too_deep_on_flash_are_ignored():
    # RecursionError out of stored_settings: the core could not be built at boot
    from parcelbox.remote import stored_settings
    from parcelbox.storage import frame
    st = MemStorage({"settings.bin": bytearray(frame(b"[" * 1500 + b"]" * 1500))})
    assert stored_settings(st, {}) == {}


@pytest.mark.parametrize("tail", [b"", b"\x13"])  # a torn tail makes the load compact the file
def test_an_event_seq_near_2_32_on_flash_does_not_stop_the_boot(tail):
    # struct.error at every boot: from the seq floor (next seq + 256), or from the compacted
    # file's header
    from parcelbox.storage import frame
    ev = struct.pack("<BIBBIII", 0x45, 0xFFFFFFFF, 1, 0, 0, 1, 0)  # a `boot` event, seq 2**32-1
    Box(MemStorage({"events.log": bytearray(frame(ev) + tail)}), bytes(32))


def test_a_journal_generation_near_2_32_does_not_stop_code_changes():
    # struct.error from the next snapshot's generation, out of Box.key on a good code too
    from parcelbox.storage import frame
    st = MemStorage({"codes.log": bytearray(frame(struct.pack("<BI", 0, 0xFFFFFFFF)))})  # HEAD
    box = Box(st, bytes(32))
    box.codes.add(1, bytes(16), 3, 0, 1, 0, 0)  # needs a snapshot first


@pytest.mark.parametrize("floor", [0xFFFFFFF0, 0x80000000])
def test_a_seq_floor_at_the_end_of_its_u32_in_the_state_file_never_stops_or_repeats(floor):
    # near 2**32: struct.error at every boot (the floor + 256 overflowed); from 2**31: the
    # outbox took its seqs for damage and every event took the same seq (fixed in 0162b72)
    st = MemStorage()
    box = Box(st, bytes(32))
    box.state.seq_floor = floor  # a u32 all the same, as a state file with a good checksum may hold
    box._save_state()
    seqs = []
    box = Box(st.reboot(), bytes(32), None, 0, lambda seq, *e: seqs.append(seq))
    box.event(19, 0, 0, 1, 0)  # tamper
    ob = box.outbox
    assert seqs == sorted(set(seqs)) and set(seqs) <= {ob.seq(i) for i in range(ob.pending())}


def test_an_event_at_the_last_seq_on_flash_does_not_stop_the_boot():
    # an OSError out of Box() at every boot: no seq was left to hand out
    from parcelbox.storage import frame
    ev = struct.pack("<BIBBIII", 0x45, 0x7FFFFFFF, 1, 0, 0, 1, 0)
    Box(MemStorage({"events.log": bytearray(frame(ev))}), bytes(32))


def test_an_ack_of_a_seq_near_2_32_on_flash_does_not_stop_the_boot():
    # an ack moved next_seq on: the seq floor overflowed its u32, struct.error at every boot
    from parcelbox.storage import frame
    log = (frame(struct.pack("<BIBBIII", 0x45, 1, 1, 0, 0, 1, 0))   # event 1
           + frame(struct.pack("<BI", 0x41, 0xFFFFFF02)))          # an ack of 2**32 - 254
    Box(MemStorage({"events.log": bytearray(log)}), bytes(32))


def test_the_known_findings_are_reported_but_do_not_fail_a_run():
    st = fuzz.Stats("x")
    st.findings = [{"key": "a", "known": None}, {"key": "b", "known": "why"}]
    assert [f["key"] for f in st.new()] == ["a"] and "and 1 known" in st.line()
    assert json.dumps(st.findings)  # plain data, for --save and reports
