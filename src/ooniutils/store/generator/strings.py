"""Vectorised building of identifier strings (measurement_uid, report_id) into Arrow arrays.

Python string formatting costs about a microsecond per value, which alone would use up the
generator's whole budget. Instead each string of a group is laid out at a fixed width in
one byte buffer: every piece (a constant, a digit-table lookup, random hex) is shifted into
contiguous uint64 words, each word is stored once with a strided write, and the buffer
becomes an Arrow ``string`` array without a copy (offsets are ``i * width``). Strings whose width varies
(a test name, an ASN) are built per width group by the caller.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache

import numpy as np
import pyarrow as pa


def byte_table(values: list[bytes] | list[str]) -> np.ndarray:
    """(K, width) uint8 table of equally long values (raises if lengths differ)."""
    raw = [v.encode() if isinstance(v, str) else v for v in values]
    width = len(raw[0]) if raw else 0
    if any(len(v) != width for v in raw):
        raise ValueError("byte_table values must all have the same length")
    return np.frombuffer(b"".join(raw), np.uint8).reshape(len(raw), width).copy()


_COLUMNS: dict[int, tuple[np.ndarray, list[tuple[int, np.ndarray]]]] = {}


def _u64_columns(table: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Split a (K, w) byte table into (byte offset, zero-padded uint64 column) of <= 8 bytes.

    Gathering from a contiguous uint64 column is much faster than from a strided view.
    Read-only tables (the constants here, cached day tables) are split once.
    """
    if not table.flags.writeable:
        hit = _COLUMNS.get(id(table))
        if hit is not None and hit[0] is table:
            return hit[1]
    k, w = table.shape
    out = []
    for j in range(0, w, 8):
        part = np.zeros((k, 8), np.uint8)
        part[:, : min(8, w - j)] = table[:, j : j + 8]
        out.append((j, part.view(np.uint64).ravel()))
    if not table.flags.writeable:
        _COLUMNS[id(table)] = (table, out)
    return out


def frozen(table: np.ndarray) -> np.ndarray:
    """Mark a byte table read-only so its uint64 split is cached (keep it alive yourself)."""
    table.setflags(write=False)
    return table


DIGITS2 = frozen(byte_table([f"{i:02d}" for i in range(100)]))
DIGITS3 = frozen(byte_table([f"{i:03d}" for i in range(1000)]))
MMSS = frozen(byte_table([f"{i // 60:02d}{i % 60:02d}" for i in range(3600)]))
_HEX = b"0123456789abcdef"
HEX_PAIRS = np.array([_HEX[i >> 4] | _HEX[i & 15] << 8 for i in range(256)], np.uint16)


_BLOCK_ROWS = 8192


class FixedRows:
    """``n`` strings of ``width`` bytes, filled left to right by the ``put_*`` methods.

    Pieces are OR-ed into contiguous uint64 word arrays (one per 8 bytes of the row), so the
    expensive strided stores into the final buffer happen once per word, not per piece.
    """

    def __init__(self, n: int, width: int) -> None:
        self.n, self.width, self.pos = n, width, 0
        self.words = np.zeros(((width + 7) // 8, n), np.uint64)

    def _or(self, values: np.ndarray | np.uint64, nbytes: int) -> None:
        q, r = divmod(self.pos, 8)
        if r == 0:
            self.words[q] |= values
        else:
            self.words[q] |= values << np.uint64(8 * r)
            if r + nbytes > 8:
                self.words[q + 1] |= values >> np.uint64(64 - 8 * r)
        self.pos += nbytes

    def put_const(self, text: bytes | str) -> FixedRows:
        raw = text.encode() if isinstance(text, str) else text
        for j in range(0, len(raw), 8):
            part = raw[j : j + 8]
            self._or(np.frombuffer(part.ljust(8, b"\0"), np.uint64)[0], len(part))
        return self

    def put_table(self, table: np.ndarray, index: np.ndarray) -> FixedRows:
        """Row ``i`` gets ``table[index[i]]`` (table: (K, w) uint8)."""
        w = table.shape[1]
        for j, column in _u64_columns(table):
            self._or(column[index], min(8, w - j))
        return self

    def put_words(self, words: np.ndarray) -> FixedRows:
        """Row ``i`` gets the 8 * k bytes of ``words[i]`` ((n, k) uint64)."""
        for j in range(words.shape[1]):
            self._or(np.ascontiguousarray(words[:, j]), 8)
        return self

    def to_arrow(self) -> pa.Array:
        if self.pos != self.width:
            raise ValueError(f"row layout filled {self.pos} of {self.width} bytes")
        n, w = self.n, self.width
        buf = np.empty(n * w + 8, np.uint8)
        # Last word first: a row's last word spills into the next row's first bytes, which
        # that row's word 0 (written later) then overwrites. Blocks of rows keep the
        # strided stores inside the CPU cache.
        for lo in range(0, n, _BLOCK_ROWS):
            hi = min(n, lo + _BLOCK_ROWS)
            for q in range(len(self.words) - 1, -1, -1):
                np.ndarray((hi - lo,), np.uint64, buf, lo * w + 8 * q, (w,))[...] = self.words[q, lo:hi]
        total = n * w
        offsets: np.ndarray
        if total < 2**31:
            offsets = np.arange(0, total + 1, w, dtype=np.int32)
            return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(buf))
        offsets = np.arange(0, total + 1, w, dtype=np.int64)
        return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(buf))


def random_hex(rng: np.random.Generator, n: int, chars: int = 16) -> np.ndarray:
    """(n, chars / 8) uint64 words holding ``chars`` lower-case hex digits per row.

    Each word spreads the 8 nibbles of 32 random bits into 8 bytes, then maps 0-9 to
    '0'-'9' and 10-15 to 'a'-'f' with bit arithmetic (no per-byte table lookups).
    """
    if chars % 8:
        raise ValueError("chars must be a multiple of 8")
    out = rng.integers(0, 2**32, size=(chars // 8, n), dtype=np.uint64)
    tmp = np.empty(n, np.uint64)
    for x in out:
        for shift, mask in ((16, 0x0000FFFF0000FFFF), (8, 0x00FF00FF00FF00FF), (4, 0x0F0F0F0F0F0F0F0F)):
            np.left_shift(x, np.uint64(shift), out=tmp)
            x |= tmp
            x &= np.uint64(mask)
        np.add(x, np.uint64(0x0606060606060606), out=tmp)
        tmp >>= np.uint64(4)
        tmp &= np.uint64(0x0101010101010101)
        tmp *= np.uint64(0x27)
        x += np.uint64(0x3030303030303030)
        x += tmp
    return out.T


def random_alnum(rng: np.random.Generator, n: int, chars: int = 16) -> np.ndarray:
    """(n, chars / 8) uint64 words holding ``chars`` ASCII letters and digits per row.

    Byte-parallel ("SWAR") arithmetic on 6 random bits per character: 0-25 → 'A'-'Z',
    26-51 → 'a'-'z', 52-61 → '0'-'9' (62 and 63 fold onto 'A' and 'B'). Every per-byte
    intermediate stays below 256, so no carry crosses into the neighbouring byte.
    """
    if chars % 8:
        raise ValueError("chars must be a multiple of 8")
    v = np.frombuffer(rng.bytes(n * chars), np.uint64).reshape(chars // 8, n).copy()
    ones = np.uint64(0x0101010101010101)
    v &= np.uint64(0x3F3F3F3F3F3F3F3F)

    def at_least(x: int) -> np.ndarray:
        return ((v + ones * np.uint64(128 - x)) >> np.uint64(7)) & ones

    v -= at_least(62) * np.uint64(62)
    ge52 = at_least(52)
    v += at_least(26) * np.uint64(6)
    v += ones * np.uint64(65)
    v -= ge52 * np.uint64(75)
    return v.T


@lru_cache(maxsize=64)
def day_table(first_day: int, last_day: int) -> np.ndarray:
    """(days, 8) ``YYYYMMDD`` table for epoch days first_day..last_day inclusive (read-only)."""
    return frozen(byte_table([
        datetime.fromtimestamp(d * 86400, UTC).strftime("%Y%m%d")
        for d in range(first_day, last_day + 1)
    ]))


def put_timestamp(rows: FixedRows, seconds: np.ndarray, sep: str = "", suffix: str = "") -> FixedRows:
    """Write epoch ``seconds`` as ``YYYYMMDD{sep}HHMMSS{suffix}`` (UTC)."""
    days = seconds // 86400
    first = int(days.min()) if len(days) else 0
    last = int(days.max()) if len(days) else 0
    rows.put_table(day_table(first, last), days - first)
    if sep:
        rows.put_const(sep)
    sod = seconds - days * 86400
    rows.put_table(DIGITS2, sod // 3600)
    rows.put_table(MMSS, sod % 3600)
    if suffix:
        rows.put_const(suffix)
    return rows
