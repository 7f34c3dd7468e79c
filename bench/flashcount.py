"""Flash writes counted at the storage interface, and what LittleFS makes of them.

`CountingStorage` is the firmware's own `parcelbox.storage.Storage` (real files in a
folder) with every `append`, `replace` and `remove` recorded: the bytes the firmware
hands to the filesystem, per file. `LittleFSModel` turns the same operations into block
erases for MicroPython's LittleFS v2 on an ESP32 (block 4 KB; read/prog size 32, so
cache 128 B and inline files up to 128 B: extmod/vfs_lfsx.c), whose copy-on-write
files rewrite the tail block on every synced append (littlefs issue #581). The
assumptions are written out in docs/performance.md section 4.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import bench.fw  # noqa: F401  (the virtual modules by their device-side names)
from parcelbox.storage import Storage

BLOCK = 4096                 # LittleFS block = the ESP32 flash's 4 KB erase sector
INLINE_MAX = 128             # cache_size 4 * max(read 32, prog 32): inline file limit
COMMIT_OVERHEAD = 24         # tags, CTZ struct and CRC of one metadata commit (bytes)
PARTITION = 1536 * 1024      # the 1.5 MB filesystem partition
CYCLES = 100_000             # erase cycles per block (ESP32 SPI NOR flash datasheet class)


@dataclass
class LittleFSModel:
    """Erases and bytes programmed that a sequence of file operations costs on LittleFS."""

    programmed: float = 0.0   # bytes programmed into data blocks and metadata logs
    erases: float = 0.0       # 4 KB block erases (metadata logs counted pro rata)

    def _commit(self, n: int) -> None:
        # A metadata commit appends to the directory's metadata log; the log's block is
        # erased when the log fills, so each commit costs its share of one erase.
        self.programmed += n + COMMIT_OVERHEAD
        self.erases += (n + COMMIT_OVERHEAD) / BLOCK

    def _data(self, old: int, new: int) -> None:
        # A file outside the metadata: its blocks from the one holding byte `old`
        # (copied, since a programmed block is never programmed again) to its end are
        # written to freshly erased blocks.
        first = old // BLOCK
        self.erases += (new - 1) // BLOCK - first + 1
        self.programmed += new - first * BLOCK
        self._commit(0)

    def append(self, size_before: int, n: int) -> None:
        new = size_before + n
        if new <= INLINE_MAX:
            self._commit(new)           # inline data is committed whole, again
        else:
            self._data(size_before if size_before > INLINE_MAX else 0, new)

    def replace(self, n: int) -> None:
        if n <= INLINE_MAX:
            self._commit(n)             # the new file, inline
        else:
            self._data(0, n)
        self._commit(16)                # the rename (and the old file's removal)

    def remove(self) -> None:
        self._commit(0)


@dataclass
class Tally:
    bytes: int = 0
    appends: int = 0
    replaces: int = 0
    removes: int = 0
    lfs: LittleFSModel = field(default_factory=LittleFSModel)


class CountingStorage(Storage):
    """The firmware's Storage, with every write counted per file and in total."""

    def __init__(self, root: str):
        super().__init__(root)
        self.files: dict[str, Tally] = defaultdict(Tally)
        self.total = Tally()

    def _both(self, name):
        return self.files[name], self.total

    def append(self, name, data):
        before = max(self.size(name), 0)
        super().append(name, data)
        for t in self._both(name):
            t.bytes += len(data)
            t.appends += 1
            t.lfs.append(before, len(data))

    def replace(self, name, data):
        before = self.bytes_written
        super().replace(name, data)
        n = self.bytes_written - before
        for t in self._both(name):
            t.bytes += n
            t.replaces += 1
            t.lfs.replace(n)

    def remove(self, name):
        existed = self.size(name) >= 0
        super().remove(name)
        if existed:
            for t in self._both(name):
                t.removes += 1
                t.lfs.remove()

    def snapshot(self) -> tuple[int, float]:
        """(bytes written, LittleFS erases) so far, to difference around a workload."""
        return self.total.bytes, self.total.lfs.erases


def years(per_day_bytes: float = 0.0, per_day_erases: float = 0.0) -> float:
    """Flash life in years of the partition, by bytes (ideal) or by modelled erases."""
    if per_day_erases:
        return PARTITION // BLOCK * CYCLES / per_day_erases / 365.25
    return PARTITION * CYCLES / per_day_bytes / 365.25
