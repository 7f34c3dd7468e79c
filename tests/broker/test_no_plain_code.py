# No plain code anywhere: a whole session (issue, deposit, pickup, wrong guesses, sync,
# revoke, listings) is captured (every MQTT payload on the box's tree, the box's files,
# the ledger, the broker log, every log record, every other CLI output) and searched for
# the issued codes' digits in any encoding. The one allowed place is the output of
# `codes issue` that shows the code once.
import base64
import logging
import re
import struct

import pytest

from host_tools.backend import protocol as p
from host_tools.testing.wait import wait_for
from roundtrip_world import World, open_and_close

BOX = "box-1"


def encodings(code):
    """Every form a leak of `code` might take, as bytes patterns (regexes)."""
    a = code.encode()
    n = int(code)
    forms = [re.escape(x) for x in (
        a.hex().encode(), a.hex().upper().encode(), base64.b64encode(a),
        base64.b64encode(a).rstrip(b"="), base64.urlsafe_b64encode(a).rstrip(b"="),
        code.encode("utf-16-le"), code.encode("utf-16-be"),
        struct.pack("<I", n), struct.pack(">I", n))]
    # the digits as a token of their own: inside a longer number or hex string they are
    # another value (a timestamp, a digest), not this code
    forms.append(rb"(?<![0-9A-Fa-f])" + a + rb"(?![0-9A-Fa-f])")
    return [re.compile(f) for f in forms]


@pytest.fixture
def world(mosquitto, tmp_path):
    w = World(mosquitto, tmp_path)
    yield w
    w.close()


def test_no_code_appears_in_payloads_files_ledger_or_logs(world, caplog):
    caplog.set_level(logging.DEBUG)
    sniffer = world.broker.paho_client(world.broker.add_user("sniffer", backend=True) and "sniffer")
    sniffer.subscribe_wait("parcelbox/v1/#")
    world.consumer()
    link = world.add_box(BOX, compartments=2)
    outputs = []
    issued = []
    for role, comp in (("driver", 1), ("recipient", 1), ("owner", 0), ("recipient", 2)):
        d = world.cli_json("codes", "issue", BOX, "--role", role, "--comp", str(comp),
                           "--wait", "15")
        assert d["result"] == "ok"
        issued.append(d)
    driver, recipient, owner, spare = issued
    link.type(driver["code"])
    wait_for(lambda: link.unlocks, what="unlock")
    open_and_close(world, link, 1, BOX)
    link.skip(5000)
    # a recipient mistypes (one digit off), then types the code
    wrong = recipient["code"][:-1] + str((int(recipient["code"][-1]) + 1) % 10)
    link.type(wrong)
    wait_for(lambda: world.events(BOX, "wrong_code"), what="wrong_code")
    link.type(recipient["code"])
    wait_for(lambda: len(link.unlocks) == 2, what="second unlock")
    open_and_close(world, link, 1, BOX)
    wait_for(lambda: world.events(BOX, "pickup"), what="pickup")
    outputs.append(world.cli("codes", "sync", BOX, "--wait", "15"))
    outputs.append(world.cli("codes", "revoke", BOX, str(spare["code_id"]), "--wait", "15"))
    for args in (("codes", "list", BOX, "--all"), ("codes", "list", BOX, "--all", "--json"),
                 ("box", "status", BOX), ("box", "status", BOX, "--json"), ("box", "list"),
                 ("events",), ("events", "--json")):
        outputs.append(world.cli(*args))
    link.skip(31000)
    wait_for(lambda: link.call(lambda box, r, now: box.outbox.pending() == 0), what="all acked")
    payloads = [m.payload for m in sniffer.drain(0.5)] + [pl for _, pl in link.published]
    assert len(payloads) > 20 and any(b'"type":"pickup"' in x for x in payloads)

    haystacks = {"mqtt": b"\n".join(payloads),
                 "box flash": b"\n".join(world.flash(BOX).values()),
                 "ledger": b"".join(f.read_bytes() for f in world.tmp.glob("ledger.db*")),
                 "broker log": world.broker.log_text().encode(),
                 "logs": caplog.text.encode(),
                 "cli": "\n".join(outputs).encode()}
    for d in issued + [{"code": wrong}]:
        for where, data in haystacks.items():
            for pat in encodings(d["code"]):
                assert not pat.search(data), "a code in %s (%r)" % (where, pat.pattern)
    # the search itself finds a code where one is, in each encoding
    c = driver["code"]
    samples = [c.encode().hex().encode(), c.encode().hex().upper().encode(),
               base64.b64encode(c.encode()), base64.b64encode(c.encode()).rstrip(b"="),
               base64.urlsafe_b64encode(c.encode()).rstrip(b"="), c.encode("utf-16-le"),
               c.encode("utf-16-be"), struct.pack("<I", int(c)), struct.pack(">I", int(c)),
               b'{"code":"%s"}' % c.encode()]
    for pat, sample in zip(encodings(c), samples):
        assert pat.search(b"..." + sample + b"...")


def test_the_codes_the_box_holds_are_digests_that_need_the_box_key():
    key = bytes(range(32))
    k = p.WireKeys.of(key)
    d1 = p.code_digest(k.code, "123456")
    assert d1 != p.code_digest(p.WireKeys.of(bytes(32)).code, "123456")
    assert b"123456" not in d1 and len(d1) == 16
