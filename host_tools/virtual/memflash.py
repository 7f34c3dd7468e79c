# A RAM-backed Storage for tests, on CPython and in the MicroPython VM, that can
# cut the power part-way through any write: what reached "flash" stays, the rest is lost.
import io


class PowerCut(BaseException):
    pass


class MemStorage:
    def __init__(self, files=None):
        self.files = files if files is not None else {}
        self.bytes_written = 0
        self.budget = -1  # bytes that may still be written before the power fails

    # Cut the power after `n` more bytes have been written (n=0: at the next write).
    def cut_after(self, n):
        self.budget = n

    # The flash as a power cycle leaves it: same files, fresh budget.
    def reboot(self):
        s = MemStorage(self.files)
        return s

    def _spend(self, data):
        n = len(data)
        if self.budget < 0 or n <= self.budget:
            if self.budget >= 0:
                self.budget -= n
            self.bytes_written += n
            return bytes(data), False
        keep = self.budget
        self.budget = 0
        self.bytes_written += keep
        return bytes(data[:keep]), True

    def read(self, name):
        d = self.files.get(name)
        return None if d is None else bytes(d)

    def open(self, name):
        d = self.files.get(name)
        return None if d is None else io.BytesIO(bytes(d))

    def size(self, name):
        d = self.files.get(name)
        return -1 if d is None else len(d)

    def replace(self, name, data):
        tmp = bytearray()
        for part in (data,) if isinstance(data, (bytes, bytearray, memoryview)) else data:
            chunk, cut = self._spend(part)
            tmp.extend(chunk)
            if cut:
                self.files[name + ".tmp"] = tmp
                raise PowerCut()
        self.files[name] = tmp  # rename: atomic

    def append(self, name, data):
        chunk, cut = self._spend(data)
        buf = self.files.get(name)
        if buf is None:
            buf = bytearray()
            self.files[name] = buf
        buf.extend(chunk)
        if cut:
            raise PowerCut()

    def remove(self, name):
        if name in self.files:
            del self.files[name]

    # Test helper: overwrite bytes of a stored file (bit rot, a bad sector).
    def corrupt(self, name, pos, value=0xFF):
        self.files[name][pos] = value

    # Test helper: flip one bit of a stored file (bit rot). The file is copied first, so
    # a caller that kept an earlier version of it (the same bytearray) still has it intact.
    def flip(self, name, bit):
        buf = bytearray(self.files[name])
        buf[bit >> 3] ^= 1 << (bit & 7)
        self.files[name] = buf

    # Test helper: keep only the first n bytes of a file (its tail lost), as a copy.
    def truncate(self, name, n):
        self.files[name] = bytearray(self.files[name][:n])

    # Test helper: put `data` back as the whole file (an older version returning, as
    # LittleFS falls back to its previous commit); None: the file vanishes.
    def restore(self, name, data):
        if data is None:
            self.files.pop(name, None)
        else:
            self.files[name] = bytearray(data)
