# The one storage interface all persistent state goes through, over plain files,
# and the checksummed record framing used by every file the firmware writes.
import os
import struct
from binascii import crc32

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731 - CPython; mypy rejects a def unlike the stub's const

FRAME_OVERHEAD = const(6)  # u16 length before the payload, u32 crc32 after it
MAX_PAYLOAD = const(0xFFFF)


# Files under one directory; every write is counted in bytes_written (flash wear).
class Storage:
    def __init__(self, root):
        self.root = root.rstrip("/")
        self.bytes_written = 0

    def _path(self, name):
        return self.root + "/" + name

    # Whole content of `name`, or None if it does not exist.
    def read(self, name):
        f = self.open(name)
        if f is None:
            return None
        try:
            return f.read()
        finally:
            f.close()

    # A binary file object for reading `name`, or None if it does not exist.
    def open(self, name):
        try:
            return open(self._path(name), "rb")
        except OSError:
            return None

    # Size of `name` in bytes, or -1 if it does not exist.
    def size(self, name):
        try:
            return os.stat(self._path(name))[6]
        except OSError:
            return -1

    # Atomically replace `name` with `data` (bytes-like, or any iterable of bytes-like
    # parts, each written before the next is asked for, so a part may reuse a buffer):
    # write a temporary file, then rename it over the old one.
    def replace(self, name, data):
        tmp = self._path(name + ".tmp")
        f = open(tmp, "wb")
        try:
            for part in parts(data):
                self.bytes_written += len(part)
                f.write(part)
        finally:
            f.close()
        os.rename(tmp, self._path(name))

    # Append `data` to `name`, creating it if needed.
    def append(self, name, data):
        f = open(self._path(name), "ab")
        try:
            self.bytes_written += len(data)
            f.write(data)
        finally:
            f.close()

    def remove(self, name):
        try:
            os.remove(self._path(name))
        except OSError:
            pass


# The parts of what replace() writes: `data` itself if bytes-like, else its items.
def parts(data):
    return (data,) if isinstance(data, (bytes, bytearray, memoryview)) else data


# Frame one record: u16 little-endian payload length, payload, crc32 of both.
def frame(payload):
    n = len(payload)
    if n > MAX_PAYLOAD:
        raise ValueError("record too long")
    head = struct.pack("<H", n)
    crc = crc32(payload, crc32(head)) & 0xFFFFFFFF
    return head + bytes(payload) + struct.pack("<I", crc)


# (start, end) of the payload of the frame at `pos` in `data`, or None when the
# frame is truncated or its checksum is wrong (a torn or corrupt record).
def frame_at(data, pos):
    if pos + FRAME_OVERHEAD > len(data):
        return None
    n = data[pos] | (data[pos + 1] << 8)
    end = pos + 2 + n
    if end + 4 > len(data):
        return None
    mv = memoryview(data)
    crc = crc32(mv[pos + 2:end], crc32(mv[pos:pos + 2])) & 0xFFFFFFFF
    if crc != struct.unpack_from("<I", data, end)[0]:
        return None
    return pos + 2, end


# Length of the longest prefix of `data` made of whole, valid frames.
def valid_length(data):
    pos = 0
    while pos < len(data):
        r = frame_at(data, pos)
        if r is None:
            break
        pos = r[1] + 4
    return pos
