# Writes tests/protocol_vectors.json: fixed keys, codes, digests, MACs and whole messages
# of docs/protocol.md, from host_tools/backend/protocol.py. Both sides' tests check against it.
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from host_tools.backend import protocol as p  # noqa: E402

OUT = Path(__file__).with_name("protocol_vectors.json")
BOX = "box-0001"
BOX_KEY = bytes(range(32))
NEW_WIRE_KEY = bytes(range(100, 132))
T0 = 1795000000  # 2026-11-18


def build():
    k = p.WireKeys.of(BOX_KEY)
    codes = [("482915", 1, 1, 1, 1, T0, T0 + 7 * 86400), ("000000", 2, 2, 0, 65535, 0, 0),
             ("999999", 3, 3, 0, 65535, 0, 0), ("123456", 4, 4, 0, 65535, 0, 0)]
    arrays = [p.code_array(i, p.code_digest(k.code, c), r, cp, u, nb, na)
              for c, i, r, cp, u, nb, na in codes]
    cmds = []

    def cmd(name, seq, op, keys=k, **f):
        t, payload = p.command(keys, BOX, seq, op, **f)
        cmds.append({"name": name, "op": op, "seq": seq, "topic": t,
                     "body": payload[65:].decode(), "payload": payload.decode()})

    cmd("add", 1, "add", code=arrays[0])
    cmd("add_with_exp", 2, "add", code=arrays[1], exp=T0 + 60)
    cmd("revoke", 3, "revoke", id=2)
    cmd("sync_begin", 4, "sync_begin", sync=7, count=4, digest=p.set_digest(arrays).hex())
    cmd("sync_part_0", 5, "sync_part", sync=7, part=0, codes=arrays[:2])
    cmd("sync_part_1", 6, "sync_part", sync=7, part=1, codes=arrays[2:])
    cmd("sync_end", 7, "sync_end", sync=7, parts=2)
    cmd("unlock", 8, "unlock", comp=1, exp=T0 + 120)  # one-shot: always with a short exp
    cmd("clear_throttle", 9, "clear_throttle", exp=T0 + 120)
    cmd("settings", 10, "settings", set={"free_tries": 3, "open_window_ms": 15000})
    cmd("state", 11, "state")
    cmd("time", 12, "time", t=T0)
    cmd("rotate", 13, "rotate", gen=1, key=p.wrap_key(k.cmd, 13, NEW_WIRE_KEY))
    k2 = p.WireKeys.of(BOX_KEY, NEW_WIRE_KEY)
    cmd("state_after_rotate", 14, "state", keys=k2)
    events = []
    for seq, kind, comp, cid, arg, t, keys in (
            (1, 1, 0, 0, 1, 0, k), (2, 16, 1, 1, 0, T0, k), (3, 2, 1, 1, 1, T0, k),
            (4, 5, 1, 1, 0, T0 + 5, k), (5, 6, 0, 0, 0 | 3 << 8, T0 + 9, k),
            (6, 17, 0, 0, 1 | 2 << 8, T0 + 10, k), (7, 16, 9, 13, 0, T0 + 11, k2)):
        t_ = p.topic(BOX, "evt")
        body = p.event_body(BOX, seq, kind, comp, cid, arg, t)
        events.append({"seq": seq, "kind": kind, "type": p.EVENTS[kind], "comp": comp, "id": cid,
                       "arg": arg, "t": t, "key_gen": 0 if keys is k else 1, "topic": t_,
                       "body": body.decode(), "payload": p.seal(keys.evt, t_, body).decode()})
    at, ap = p.ack(k, BOX, [1, 2, 3])
    st = {"t": T0, "boots": 3, "codes": 4, "active": 4, "capacity": 256,
          "digest": p.set_digest(arrays).hex(), "pending": 2, "next_seq": 8, "cmd_seq": 13,
          "key_gen": 0, "occupied": 1, "failures": 0, "wait_s": 0, "faults": 0}
    sbody = ('{"v":1,"box":"%s",' % BOX + ",".join(
        '"%s":%s' % (f, json.dumps(st[f])) for f in p.STATE_FIELDS) + "}").encode()
    stopic = p.topic(BOX, "state")
    return {
        "about": "docs/protocol.md test vectors; regenerate with tests/gen_protocol_vectors.py",
        "box_id": BOX, "box_key": BOX_KEY.hex(),
        "keys": {"code": k.code.hex(), "cmd": k.cmd.hex(), "evt": k.evt.hex()},
        "rotation": {"seq": 13, "gen": 1, "new_wire_key": NEW_WIRE_KEY.hex(),
                     "pad": p.wrap_pad(k.cmd, 13).hex(),
                     "wrapped": p.wrap_key(k.cmd, 13, NEW_WIRE_KEY),
                     "keys": {"cmd": k2.cmd.hex(), "evt": k2.evt.hex()}},
        "codes": [{"code": c[0], "array": a} for c, a in zip(codes, arrays)],
        "set_digest": {"codes": arrays, "digest": p.set_digest(arrays).hex(),
                       "empty": p.set_digest([]).hex()},
        "topics": {kind: p.topic(BOX, kind) for kind in ("cmd", "ack", "evt", "state", "status")},
        "commands": cmds,
        "events": events,
        "ack": {"topic": at, "body": ap[65:].decode(), "payload": ap.decode()},
        "state": {"fields": st, "topic": stopic, "body": sbody.decode(),
                  "payload": p.seal(k.evt, stopic, sbody).decode()},
        "status": {"online": '{"v":1,"online":true}', "offline": '{"v":1,"online":false}'},
    }


def text():
    return json.dumps(build(), indent=1) + "\n"


if __name__ == "__main__":
    OUT.write_text(text())
    print("wrote", OUT)
