# The fuzzer's mutations (host_tools/fuzz/runner.py): bytes changed, cut, spliced and grown with
# boundary values, and JSON values generated or mutated; random.Random decides all of it.
import json
import struct

# Integers at the edges parsers get wrong: signs, byte, u16, u32, i64 and beyond.
BOUNDARY_INTS = (0, 1, -1, 2, 7, 8, 31, 32, 33, 127, 128, 255, 256, 4095, 4096, 4097, 32767,
                 32768, 65535, 65536, 2 ** 30 - 1, 2 ** 30, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1,
                 2 ** 32, 2 ** 53 + 1, 2 ** 63 - 1, 2 ** 63, 2 ** 64, 10 ** 30, -(2 ** 31),
                 -(2 ** 63), -(10 ** 30))
_PACK = ("<B", "<H", ">H", "<I", ">I")
STRINGS = ("", " ", "a", "0", "-1", "\x00", "a\x00b", "../x", ".", "..", "/", "x" * 64,
           "x" * 65, "x" * 300, "é", "日本", "\ud800", "\U0001f4e6", "\n", "\\", '"', "null",
           "true", "NaN", "1e999", "ca.pem\x00", "CON", "a/b", "*", "#", "+")
_TOKENS = (b"{", b"}", b"[", b"]", b",", b":", b'"', b"\\", b"\\u0000", b"\\ud800", b"0",
           b"-", b"1e999", b"-0", b"NaN", b"Infinity", b"true", b"null", b"\x00", b"\xff",
           b"\xc3", b"\xe2\x82", b" ", b"9" * 40, b"[" * 64, b"{\"a\":" * 32)


# One random byte-level change of `data` (bytes); `others`: inputs to splice from.
def mutate_bytes(rng, data, others=()):
    b = bytearray(data)
    k = rng.randrange(11)
    n = len(b)
    if k == 0 and n:  # bit flip
        i = rng.randrange(n)
        b[i] ^= 1 << rng.randrange(8)
    elif k == 1 and n:  # a random byte
        b[rng.randrange(n)] = rng.randrange(256)
    elif k == 2 and n:  # a boundary byte
        b[rng.randrange(n)] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, 0x20, 0x22, 0x30))
    elif k == 3 and n:  # truncation
        del b[rng.randrange(n):]
    elif k == 4 and n:  # a range deleted
        i = rng.randrange(n)
        del b[i:i + rng.randrange(1, 17)]
    elif k == 5:  # random bytes inserted
        i = rng.randrange(n + 1)
        b[i:i] = rng.randbytes(rng.randrange(1, 9))
    elif k == 6:  # a boundary integer written over or into the data
        v = rng.choice(BOUNDARY_INTS)
        f = rng.choice(_PACK)
        v &= (1 << (8 * struct.calcsize(f))) - 1
        raw = struct.pack(f, v)
        i = rng.randrange(n + 1)
        if rng.random() < 0.5:
            b[i:i + len(raw)] = raw
        else:
            b[i:i] = raw
    elif k == 7 and n:  # a range duplicated
        i = rng.randrange(n)
        j = min(n, i + rng.randrange(1, 33))
        b[j:j] = b[i:j]
    elif k == 8 and others:  # splice: our head, another input's tail
        o = rng.choice(others)
        b = b[:rng.randrange(n + 1)] + bytearray(o[rng.randrange(len(o) + 1):])
    elif k == 9:  # a token that upsets text parsers
        i = rng.randrange(n + 1)
        t = rng.choice(_TOKENS)
        if rng.random() < 0.5:
            b[i:i + len(t)] = t
        else:
            b[i:i] = t
    elif n > 1:  # two ranges swapped
        i, j = sorted((rng.randrange(n), rng.randrange(n)))
        w = rng.randrange(1, min(16, n - j) + 1) if j < n else 0
        b[i:i + w], b[j:j + w] = b[j:j + w], b[i:i + w]
    return bytes(b)


# 1 to `most` stacked byte-level changes.
def mutate(rng, data, others=(), most=4):
    for _ in range(rng.randint(1, most)):
        data = mutate_bytes(rng, data, others)
    return data


# ---- JSON ---------------------------------------------------------------------------

# An object with repeated keys: json.dumps cannot write one, dumps() below can.
class Pairs(list):
    pass


def nested(rng, depth=None):
    depth = depth or rng.choice((30, 100, 990, 1000, 1001, 5000, 20000))
    kind = rng.randrange(3)
    if kind == 0:
        return "[" * depth + "]" * depth
    if kind == 1:
        return '{"a":' * depth + "1" + "}" * depth
    return "[" * depth  # never closed


def scalar(rng):
    k = rng.randrange(6)
    if k == 0:
        return rng.choice(BOUNDARY_INTS)
    if k == 1:
        return rng.choice((True, False, None))
    if k == 2:
        return rng.choice((0.0, -0.0, 0.5, 1e308, -1e308, 1e-320, float("inf"), float("nan"), 7.0))
    if k == 3:
        return rng.choice(STRINGS)
    if k == 4:
        return "".join(chr(rng.choice((rng.randrange(32, 127), rng.randrange(0x10000),
                                       rng.randrange(0x110000)))) for _ in range(rng.randrange(12)))
    return rng.randrange(-1000, 1000)


# A random JSON value, at most `depth` levels deep.
def value(rng, depth=3):
    k = rng.randrange(8)
    if depth <= 0 or k < 5:
        return scalar(rng)
    if k == 5:
        return [value(rng, depth - 1) for _ in range(rng.randrange(5))]
    if k == 6:
        return {rng.choice(STRINGS[:20] + ("v", "box", "seq", "op")): value(rng, depth - 1)
                for _ in range(rng.randrange(4))}
    return Pairs([("k", 1), ("k", value(rng, depth - 1))])


# `v` with one random change somewhere inside: a value replaced, a key added, removed or
# repeated, a list grown or emptied. Never changes `v` itself (copies on the way down).
def mutate_value(rng, v, keys=()):
    if isinstance(v, dict) and v and rng.random() < 0.95:
        d = dict(v)
        k = rng.choice(list(d))
        r = rng.randrange(6)
        if r == 0:
            del d[k]
        elif r == 1:
            d[rng.choice(tuple(keys) + STRINGS[:8]) if keys or rng.random() < 0.5 else k + "x"] = value(rng)
        elif r == 2:  # the same key twice: which one wins is the parser's choice
            return Pairs(list(d.items()) + [(k, value(rng))])
        elif r == 3:
            d[k] = value(rng)
        else:
            d[k] = mutate_value(rng, d[k], keys)
        return d
    if isinstance(v, list) and v and rng.random() < 0.9:
        a = list(v)
        r = rng.randrange(5)
        i = rng.randrange(len(a))
        if r == 0:
            del a[i]
        elif r == 1:
            a.insert(i, value(rng))
        elif r == 2:
            a = a * rng.choice((2, 10, 100))
        else:
            a[i] = mutate_value(rng, a[i], keys)
        return a
    if isinstance(v, bool) or v is None or rng.random() < 0.3:
        return value(rng)
    if isinstance(v, int):
        return rng.choice((v + 1, v - 1, -v, v * 2 ** 32, rng.choice(BOUNDARY_INTS), str(v), float(v)))
    if isinstance(v, str):
        return rng.choice((v + rng.choice(STRINGS), v[:rng.randrange(len(v) + 1)], v.upper(),
                           v + "\x00", rng.choice(STRINGS), v * 50, [v], None))
    return value(rng)


# JSON text of `v` (Pairs as objects with repeated keys), compact or spaced.
def dumps(v, spaced=False):
    if isinstance(v, Pairs):
        sep = ", " if spaced else ","
        return "{" + sep.join(json.dumps(str(k)) + ":" + dumps(x, spaced) for k, x in v) + "}"
    if isinstance(v, dict):
        return dumps(Pairs(v.items()), spaced)
    if isinstance(v, list):
        return "[" + (", " if spaced else ",").join(dumps(x, spaced) for x in v) + "]"
    return json.dumps(v)


# UTF-8 bytes of dumps(v); a lone surrogate goes out as it would from a broken writer.
def encode(v, spaced=False):
    return dumps(v, spaced).encode("utf-8", "surrogatepass")
