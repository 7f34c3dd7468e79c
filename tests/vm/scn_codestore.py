# Scenario: HMAC-SHA256 vectors and a 1,000-code store, on CPython and in the MicroPython VM
# (96 KB heap): load, find, use, revoke, reload, power cut, corruption, sync. Prints no codes.
#
# In the VM the 1,000 codes live in /flash through the firmware's Storage (run with
# --flash DIR; the test tier does), as on the ESP32: 96 KB cannot hold the store, a
# MemStorage copy of its 32 KB snapshot and the code at once. The power-cut and
# corruption steps use MemStorage.
import gc
import sys
from binascii import hexlify

from memflash import MemStorage, PowerCut
from parcelbox import codestore
from parcelbox.codestore import CodeStore, ROLE_DRIVER, ROLE_OWNER, ROLE_RECIPIENT, UNLIMITED
from parcelbox.hmac256 import Hmac, derive, equal, hmac_sha256
from parcelbox.storage import Storage

N = 1000
SET = [None]  # set_digest() before the reboot
RFC4231 = (  # cases 1, 2 and 6: key, data, HMAC-SHA-256
    (b"\x0b" * 20, b"Hi There",
     b"b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe", b"what do ya want for nothing?",
     b"5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    (b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First",
     b"60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
)


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


# Before measuring: twice, as one pass can miss the last step's objects (a stale pointer).
def collect():
    gc.collect()
    gc.collect()


def free():
    return gc.mem_free() if hasattr(gc, "mem_free") else -1


def code(i):
    return ("%06d" % (i * 7919 % 1000000)).encode()  # 7919 is prime: all distinct


def scenario_hmac():
    for case in range(3):
        key, data, want = RFC4231[case]
        check(hexlify(hmac_sha256(key, data)) == want, "RFC 4231 vector")
        check(Hmac(key).digest(data) == hmac_sha256(key, data), "Hmac object")
    print("hmac: RFC 4231 cases 1, 2, 6 ok")
    box = bytes(range(32))
    check(derive(box, b"code") != derive(box, b"cmd"), "derive separates purposes")
    check(equal(b"abc", b"abc") and not equal(b"abc", b"abd"), "equal")
    check(not equal(b"a", b"ab"), "equal: lengths differ")
    print("hmac: derive and equal ok")


# /flash through Storage in the VM, RAM on CPython (a /flash on the host is not this
# test's); starts empty.
def flash_storage():
    if sys.implementation.name != "micropython":
        return MemStorage()
    st = Storage("/flash")
    st.remove("codes.bin")
    st.remove("codes.log")
    return st


# What a backend sync message yields, one record at a time: every 10th a driver's code.
def records(store):
    for i in range(1, N + 1):
        role = ROLE_DRIVER if i % 10 == 0 else ROLE_RECIPIENT
        yield (i, store.digest(code(i)), role, i % 8, 1, 0, 0)


# One CodeStore for the 1,000 codes; a reboot is load(), which drops RAM and reads flash
# (a second store beside a garbage first one would not fit the heap).
def reboot_store(store):
    check(store.load() == 0, "clean load")


def step_sync_thousand(st, store):
    reboot_store(store)
    store.replace_all(records(store))
    check(store.count() == N, "synced")
    check(st.size("codes.bin") == 12 + 32 * N + 4, "snapshot size")
    print("full sync of", store.count(), "codes; heap free", free())


SMALL = 64  # capacity of the stores in the small steps (each preallocates its buffers)


def boot(st, key):
    store = CodeStore(st, key, SMALL)
    check(store.load() == 0, "clean load")
    return store


def step_load_and_find(store):
    reboot_store(store)
    check(store.count() == N, "all codes loaded")
    print("loaded", store.count(), "codes; heap free", free())
    for i in (1, 2, 500, 999, N):
        slot = store.find(code(i))
        check(slot >= 0 and store.fields(slot)[0] == i, "find a stored code")
    check(store.find(b"1234567") == -1, "unknown code")
    check(store.fields(store.find(code(10)))[1] == ROLE_DRIVER, "role")
    print("found 5 codes, refused an unknown one")


# One use taken, an owner PIN added, a code revoked: all on flash before returning.
def step_use(store):
    reboot_store(store)
    check(store.consume(store.find(code(500))) == 0, "one-time code used")
    store.add(N + 1, store.digest(b"424242"), ROLE_OWNER, 0, UNLIMITED, 0, 0)
    check(store.consume(store.find(b"424242")) == UNLIMITED, "owner PIN has no limit")
    check(store.revoke(999) and store.find(code(999)) == -1, "revoked")
    print("used one code, added an owner PIN, revoked one")
    SET[0] = store.set_digest()


def step_reload(store):
    reboot_store(store)
    check(store.count() == N and store.set_digest() == SET[0], "same set after reboot")
    check(store.fields(store.find(code(500)))[3] == 0, "use stays taken")
    check(store.find(code(999)) == -1 and store.find(b"424242") >= 0, "journal replayed")
    check(store.fields(store.find(code(1000)))[0] == N, "snapshot codes still there")
    print("reboot:", store.count(), "codes as left; heap free", free())


def small_store(key):
    st = MemStorage()
    store = boot(st, key)
    for i in range(1, 7):
        store.add(i, store.digest(code(i)), ROLE_RECIPIENT, 1, 1, 0, 0)
    return st


# A power cut in the middle of a journal write: the torn tail is dropped on boot...
def step_power_cut(st, key):
    store = boot(st, key)
    st.cut_after(5)
    try:
        store.consume(store.find(code(2)))
        check(False, "power cut expected")
    except PowerCut:
        pass


# ...and cut off before the next append, which survives the next reboot.
def step_after_cut(st, key):
    store = CodeStore(st, key, SMALL)
    check(store.load() == codestore.PROBLEM_JOURNAL, "torn tail reported")
    check(store.fields(store.find(code(2)))[3] == 1, "torn consume not applied")
    check(store.consume(store.find(code(2))) == 0, "consume after the cut")
    store = boot(st.reboot(), key)
    check(store.fields(store.find(code(2)))[3] == 0, "kept after reboot")
    print("power cut mid-write: tail dropped; the next write kept")


# A flipped bit in the snapshot: flagged, store empty, nothing raised.
def step_corrupt(st, key):
    store = boot(st, key)
    store.replace_all([(7, store.digest(code(7)), ROLE_RECIPIENT, 1, 1, 0, 0)])
    st.files["codes.bin"][20] ^= 0x10
    store = CodeStore(st.reboot(), key, SMALL)
    check(store.load() & codestore.PROBLEM_SNAPSHOT, "corrupt snapshot flagged")
    check(store.count() == 0 and store.find(code(7)) == -1, "corrupt snapshot: empty")
    print("corrupt snapshot: flagged, store empty")


# A small full sync, the set digest, and expiry.
def step_sync(key):
    st = MemStorage()
    store = boot(st, key)
    store.replace_all([(1, store.digest(b"111111"), ROLE_RECIPIENT, 1, 1, 0, 50),
                       (2, store.digest(b"222222"), ROLE_DRIVER, 2, 3, 0, 0)])
    digest = store.set_digest()
    store = boot(st.reboot(), key)
    check(store.set_digest() == digest, "same set digest after reboot")
    check(store.expire(60) == 1 and store.count() == 1, "expired one")
    store = boot(st.reboot(), key)
    check(store.count() == 1 and store.find(b"222222") >= 0, "sync and expiry kept")
    print("sync of 2, set digest, expiry of 1, reboot ok")


def main():
    scenario_hmac()
    key = derive(b"provisioned box key, 32 bytes..", b"code")
    st = flash_storage()
    store = CodeStore(st, key)
    step_sync_thousand(st, store)
    collect()
    step_load_and_find(store)
    collect()
    step_use(store)
    collect()
    step_reload(store)
    store = None
    collect()
    st = small_store(key)
    step_power_cut(st, key)
    step_after_cut(st.reboot(), key)
    step_corrupt(small_store(key), key)
    step_sync(key)
    print("OK codestore")


main()
