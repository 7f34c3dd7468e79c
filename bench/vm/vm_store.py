# VM side of bench/bench_store.py: heap per code and lookup cost of the firmware's
# CodeStore against a naive store, a dict {hex digest: (id, role, comp, uses, nb, na)}.
# N comes from a generated `benchcfg` module.
import gc
import struct
from binascii import hexlify
from hashlib import sha256

import benchcfg
from benchprobe import measure, nothing
from parcelbox.codestore import CodeStore
from parcelbox.hmac256 import Hmac, equal
from parcelbox.storage import Storage

N = benchcfg.N
CODE_KEY = b"c" * 32
T0 = 1795600000
TYPED = b"24681357"
mac = Hmac(CODE_KEY)


def digest_of(i):
    if i == N:
        return mac.digest(TYPED)[:16]
    return sha256(struct.pack("<I", i)).digest()[:16]


def records():
    for i in range(1, N + 1):
        yield (i, digest_of(i), 1, 1, 1, T0, T0 + 86400)
        if i % 64 == 0:
            gc.collect()


def free():
    gc.collect()
    gc.collect()
    return gc.mem_free()


def build_store():
    s = CodeStore(Storage("/flash"), CODE_KEY, N)
    s.replace_all(records(), N)
    return s


def build_naive():
    d = {}
    for i in range(1, N + 1):
        # the digest the backend sends is hex on the wire: kept as it came
        d[hexlify(digest_of(i)).decode()] = (i, 1, 1, 1, T0, T0 + 86400)
        if i % 64 == 0:
            gc.collect()
    return d


holder = []
f0 = free()
holder.append(build_store())
f1 = free()
store = holder[0]
print("store=%d" % (f0 - f1))
if store.fields(store.find(TYPED))[0] != N or store.find(b"13572468") != -1:
    raise AssertionError("the store finds the wrong slot")
f0 = free()
holder.append(build_naive())
f1 = free()
naive = holder[1]
print("naive=%d" % (f0 - f1))
typed_hex = hexlify(mac.digest(TYPED)[:16]).decode()
if naive.get(typed_hex)[0] != N:
    raise AssertionError("the naive store finds the wrong code")

D_IN = mac.digest(TYPED)[:16]
D_OUT = mac.digest(b"13572468")[:16]


def fw_hit():
    return store.find_digest(D_IN)


def fw_miss():
    return store.find_digest(D_OUT)


def nv_hit():
    return naive.get(hexlify(D_IN).decode())


def nv_miss():
    return naive.get(hexlify(D_OUT).decode())


def fw_code():
    return store.find(TYPED)


def nv_code():
    return naive.get(hexlify(mac.digest(TYPED)[:16]).decode())


def compare():
    return equal(D_IN, D_OUT)


R = benchcfg.R
allocs = [measure(f, R) for f in (fw_hit, fw_miss, nv_hit, nv_miss, fw_code, nv_code, nothing,
                                  compare)]
print("alloc=" + " ".join(str(a) for a in allocs))
