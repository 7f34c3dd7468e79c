# Outbox in the VM: fill a capacity-256 outbox on a MemStorage, read it back in order,
# ack it (out of order, with duplicates), survive a power cut, and fold a full outbox.
import gc

from memflash import MemStorage, PowerCut
from parcelbox import events
from parcelbox.outbox import TORN, Outbox


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


# No gc.collect() here: in the WASI VM a collection frees the heap-allocated frames of
# running functions (they are not GC roots there), so this reads the counters only.
def free():
    return gc.mem_free() if hasattr(gc, "mem_free") else -1


before = free()
st = MemStorage()
ob = Outbox(st, capacity=256)
check(ob.load() == 0, "fresh load is clean")
for i in range(256):
    check(ob.add(events.OPENED, i & 7, i, 2, 1700000000 + i) == i + 1, "seq counts from 1")
check(ob.pending() == 256, "outbox full")
full = free()
print("outbox full: 256 pending, file", len(st.files["events.log"]), "bytes")
if before >= 0:
    # the file itself lives in MemStorage here (on the box it is on flash)
    print("heap used by outbox + its RAM flash:", before - full, "bytes; free:", full)

last = 0
for i in range(256):
    e = ob.get(i)
    check(e[0] > last and e[3] == i and e[5] == 1700000000 + i, "pending in order")
    last = e[0]

# the link sends a window of 8 in flight; acks come back out of order and twice
seq = ob.first()[0]
while ob.pending():
    window = [ob.get(i)[0] for i in range(min(8, ob.pending()))]
    for s in reversed(window):
        check(ob.ack(s), "ack a pending seq")
        check(not ob.ack(s), "duplicate ack changes nothing")
    check(window[0] == seq, "window starts at the oldest")
    seq = window[-1] + 1
check(ob.first() is None and ob.next_seq == 257, "all acked")
print("acked 256; bytes written so far:", st.bytes_written)

# power cut in the middle of an append: the torn record is dropped, seq goes on
ob.add(events.DEPOSIT, 1, 42)
st.cut_after(11)
try:
    ob.add(events.PICKUP, 1, 43)
    check(False, "power cut expected")
except PowerCut:
    pass
st = st.reboot()
ob = Outbox(st, capacity=256)
check(ob.load() == TORN, "torn tail reported")
check(ob.pending() == 1 and ob.first()[:4] == (257, events.DEPOSIT, 1, 42), "earlier event kept")
check(ob.add(events.PICKUP, 1, 43) == 258, "seq continues after the torn record")
ob.ack(257)
ob.ack(258)

# full of security events: the oldest are folded into one OVERFLOW summary
for i in range(256):
    ob.add(events.WRONG_CODE, arg=i)
ob.add(events.FORCED, 2)
n = ob.pending()
summary = ob.get(n - 2)
print("after fold: pending", n, "summary", summary, "dropped", ob.dropped)
check(summary[1] == events.OVERFLOW and summary[3] == 259 and summary[4] == 16, "summary")
check(ob.get(n - 1)[1] == events.FORCED, "incoming event kept")
ob2 = Outbox(st.reboot(), capacity=256)
check(ob2.load() == 0 and ob2.pending() == n and ob2.get(n - 2) == summary, "reload")
print("free heap at the end:", free())
print("OK outbox")
