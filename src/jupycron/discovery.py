"""Find autorun notebooks and read their ``# jupycron: {...}`` line. Never touches notebooks.

Discovery rules (:func:`scan`):

* every file matching ``**/*autorun*.ipynb`` under the notebooks folder;
* any path component starting with ``.`` is skipped (``.ipynb_checkpoints``, ``.git``,
  ``.hidden_autorun.ipynb``), and so is the output folder when it lies inside;
* symbolic links to directories are not followed (so a symlink loop cannot trap the scan and
  nothing outside the folder is walked); symbolic links to notebook files are read;
* file names that are not valid UTF-8 are skipped with a warning.

The config line is a whole-line comment in a **code** cell, ``# jupycron: {"every": "30 minute"}``
(spaces around ``#`` and ``:`` are allowed; ``jupycron`` is lower case). The first such line in
notebook order is used. The same text in a markdown/raw cell, in an output, in the metadata,
or after code on the same line does not count.

How a notebook is read (the scan of 10,000 notebooks, some of them megabytes of base64
images, has to stay well under a second):

* **Jupyter's layout** (``nbformat.write``: one-space indent, so a cell is ``\\n  {\\n`` ...
  ``\\n  }`` and its keys are ``\\n   "key": ``; JSON strings hold no raw newline, so these
  byte sequences are always structure). The raw bytes are searched for candidates, a ``#``
  (``memchr``) followed by JSON-encoded blanks and ``jupycron``. Neither ``#`` nor the
  letters of ``jupycron`` are escaped by any JSON writer (``json.dumps`` escapes only
  quotes, backslashes, control and, optionally, non-ASCII characters), so a file without a
  candidate has no line and is not decoded at all. For a candidate, the enclosing cell and
  key are found with ``rfind``/``find`` on those markers; only when the key is ``source`` of a
  ``code`` cell is that one JSON value decoded and checked with the exact line rule. Big
  outputs (images) before the line are skipped, never decoded. The first 16 KiB are read
  first; the rest only when the answer is not in them. Newlines may be ``\\n`` or ``\\r\\n``.
* **Any other layout** (compact JSON, another indent, nbformat 3 ``worksheets``, a BOM...)
  falls back to decoding: the cells of the first 16 KiB one by one,
  then the rest is searched for ``jupycron`` and only the cells around an occurrence are
  decoded (or the whole document when ``"cells"`` is not its first key).

Only what is decoded is validated. A notebook truncated after its jupycron line is still
listed (its run fails). In Jupyter's layout a notebook without any candidate is checked only
for truncation (it must end with ``}``); damage inside it goes unnoticed until it is run.
Known limits of the byte search (no JSON writer produces these): a marker spelled with
``\\uXXXX`` escapes, or a line split across two strings of a ``source`` list, is not found.

Nothing here raises out of :func:`scan` or :func:`read_notebook`: an unreadable or corrupt
notebook is returned disabled with ``disabled_reason = "cannot read notebook: ..."``.

Re-scans: :class:`ScanCache` remembers each file's answer by ``(mtime_ns, size, inode,
ctime_ns)``; with a path (:meth:`ScanCache.for_output`, ``<output>/.scan-cache.json``) it is
persisted, so ``jupycron tick`` (a new process every minute) only ``stat``\\ s unchanged files.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import operator
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safefiles.atomic import atomic_write_bytes
from safefiles.stamps import RACY_WINDOW_NS, Stamp
from safefiles.stamps import trusted as stamp_trusted

from .exceptions import SpecError
from .models import ALERT_CHANNELS, JobSpec, Notebook
from .schedule import normalise_every, validate_cron, validate_tz

log = logging.getLogger(__name__)

__all__ = [
    "DISABLED_IN_LINE",
    "KNOWN_KEYS",
    "NO_LINE",
    "SCAN_CACHE_FILE",
    "ScanCache",
    "find_spec_text",
    "iter_autorun_files",
    "parse_spec",
    "read_notebook",
    "scan",
]

NO_LINE = "no jupycron line"
DISABLED_IN_LINE = "disabled in its jupycron line"
INVALID_PREFIX = "invalid jupycron line: "
UNREADABLE_PREFIX = "cannot read notebook: "
KNOWN_KEYS = ("every", "cron", "tz", "MaxMem", "MaxRuntime", "enabled", "RunAtOnce",
              "AlertOnFinding")
#: name of the persisted :class:`ScanCache` inside the output folder
SCAN_CACHE_FILE = ".scan-cache.json"

_MARKER = "jupycron"
_LINE_RE = re.compile(r"^\s*#\s*jupycron\s*:(.*)$")
_HEAD_RE = re.compile(r'\s*\{\s*"cells"\s*:\s*\[')
_CELL_START = '\n  {\n   "'
_WS_RE = re.compile(r"\s*")
_FIRST_CHUNK = 16 * 1024
_DECODER = json.JSONDecoder()


# --- the jupycron line -------------------------------------------------------------------

def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise SpecError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _positive_number(data: dict[str, Any], key: str, unit: str) -> float | None:
    if key not in data:
        return None
    v = data[key]
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise SpecError(f'"{key}" must be a number ({unit}), got {json.dumps(v)}')
    if not math.isfinite(v) or v <= 0:
        raise SpecError(f'"{key}" must be positive ({unit}), got {v}')
    return float(v)


def parse_spec(json_text: str) -> JobSpec:
    """Parse the JSON after ``# jupycron:`` into a :class:`JobSpec`; raise :class:`SpecError`.

    Keys: exactly one of ``every`` ("N unit", see :func:`jupycron.schedule.parse_every`) or
    ``cron`` (5 fields) with optional ``tz`` (IANA name, cron only); optional ``MaxMem``
    (MB, positive; fractions are rounded up), ``MaxRuntime`` (seconds, positive),
    ``enabled`` (bool), ``RunAtOnce`` (bool: a new notebook runs at once, see
    :func:`jupycron.schedule.due_slot`) and ``AlertOnFinding`` (true/false or a list of
    alert channels: send the notebook's finding level changes, see
    :mod:`jupycron.run_alerts`). Unknown keys, wrong types and duplicate keys are errors.

    >>> parse_spec('{"every": "30 mins", "MaxMem": 500}').every
    '30 minute'
    """
    return _parse_spec_cached(json_text.strip())


@functools.lru_cache(maxsize=4096)
def _parse_spec_cached(text: str) -> JobSpec:
    # Many notebooks share a line ("every": "1 day"); JobSpec is frozen, so caching is safe.
    if not text:
        raise SpecError('nothing after "jupycron:" (expected e.g. {"every": "1 day"})')
    try:
        data = json.loads(text, object_pairs_hook=_reject_duplicates)
    except json.JSONDecodeError as exc:
        raise SpecError(f"not valid JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(data, dict):
        raise SpecError(f"expected a JSON object like {{\"every\": \"1 day\"}}, got {json.dumps(data)}")
    for key in data:
        if key not in KNOWN_KEYS:
            hint = next((k for k in KNOWN_KEYS if k.lower() == key.lower()), None)
            extra = f" (did you mean {hint!r}?)" if hint else f" (known: {', '.join(KNOWN_KEYS)})"
            raise SpecError(f"unknown key {key!r}{extra}")
    has_every, has_cron = "every" in data, "cron" in data
    if has_every and has_cron:
        raise SpecError('give either "every" or "cron", not both')
    if not has_every and not has_cron:
        raise SpecError('missing "every" (e.g. "30 minute") or "cron" (e.g. "0 6 * * *")')
    tz = data.get("tz")
    if "tz" in data:
        if not has_cron:
            raise SpecError('"tz" only applies to "cron"; "every" slots are aligned to UTC')
        validate_tz(tz)
    every = normalise_every(data["every"]) if has_every else None
    cron = validate_cron(data["cron"], tz) if has_cron else None
    max_mem = _positive_number(data, "MaxMem", "MB")
    max_runtime = _positive_number(data, "MaxRuntime", "seconds")
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        raise SpecError(f'"enabled" must be true or false, got {json.dumps(enabled)}')
    run_at_once = data.get("RunAtOnce")
    if run_at_once is not None and not isinstance(run_at_once, bool):
        raise SpecError(f'"RunAtOnce" must be true or false, got {json.dumps(run_at_once)}')
    return JobSpec(every=every, cron=cron, tz=tz,
                   max_mem_mb=math.ceil(max_mem) if max_mem is not None else None,
                   max_runtime_s=max_runtime, enabled=enabled, run_at_once=run_at_once,
                   alert_on_finding=_alert_on_finding(data.get("AlertOnFinding")), raw=text)


def _alert_on_finding(v: Any) -> bool | tuple[str, ...] | None:
    """``AlertOnFinding``: true/false, or a non-empty list of alert channel names."""
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, list) and v and all(isinstance(c, str) for c in v):
        names = [c.strip().lower() for c in v]
        unknown = [c for c in names if c not in ALERT_CHANNELS]
        if not unknown:
            return tuple(dict.fromkeys(names))
        raise SpecError(f'"AlertOnFinding": unknown channel(s) {", ".join(map(json.dumps, unknown))} '
                        f"(use {', '.join(ALERT_CHANNELS)})")
    raise SpecError('"AlertOnFinding" must be true, false or a list of channels like '
                    f'["slack", "ntfy"], got {json.dumps(v)}')


def _line_in_source(source: Any) -> str | None:
    if isinstance(source, list):
        source = "".join(s for s in source if isinstance(s, str))
    if not isinstance(source, str) or _MARKER not in source:
        return None
    for line in source.splitlines():
        m = _LINE_RE.match(line)
        if m:
            return m.group(1)
    return None


def _line_in_cell(cell: Any, index: int) -> str | None:
    if not isinstance(cell, dict):
        raise ValueError(f"cell {index} is not a JSON object")
    if cell.get("cell_type") != "code":
        return None
    # nbformat 4 keeps code in "source"; nbformat 3 in "input".
    return _line_in_source(cell.get("source", cell.get("input")))


def find_spec_text(nb: Any) -> str | None:
    """Given a decoded notebook, the text after the first code cell's ``# jupycron:``, or None."""
    if not isinstance(nb, dict):
        raise ValueError("the notebook is not a JSON object")
    if "cells" in nb:
        cells = nb["cells"]
    elif isinstance(nb.get("worksheets"), list):  # nbformat 3
        cells = [c for ws in nb["worksheets"] if isinstance(ws, dict)
                 for c in (ws.get("cells") or [])]
    else:
        raise ValueError('no "cells" in the notebook')
    if not isinstance(cells, list):
        raise ValueError('"cells" is not a list')
    for i, cell in enumerate(cells):
        line = _line_in_cell(cell, i)
        if line is not None:
            return line
    return None


# --- any other layout: decoding (the general, slower path) -------------------------------

@dataclass
class _Walk:
    line: str | None
    done: bool      # False: ran out of text at ``pos`` (an incomplete cell)
    pos: int
    index: int
    expect_value: bool


def _walk_cells(text: str, pos: int, index: int, final: bool,
                expect_value: bool = True) -> _Walk:
    """Decode cells one by one from ``pos`` (just after ``[`` when ``index`` is 0) until the
    line is found, the list ends, or (when not ``final``) the text runs out mid-cell."""
    while True:
        pos = _WS_RE.match(text, pos).end()  # type: ignore[union-attr]
        if pos >= len(text):
            if not final:
                return _Walk(None, False, pos, index, expect_value)
            raise ValueError('truncated notebook: the "cells" list never ends')
        c = text[pos]
        if c == "]" and (index == 0 or not expect_value):
            return _Walk(None, True, pos, index, expect_value)
        if not expect_value:
            if c != ",":
                raise ValueError(f"invalid JSON after cell {index - 1}: unexpected {c!r}")
            pos += 1
            expect_value = True
            continue
        try:
            cell, end = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            if not final:
                return _Walk(None, False, pos, index, expect_value)
            raise ValueError(f"invalid JSON in cell {index}: {exc.msg}") from None
        line = _line_in_cell(cell, index)
        if line is not None:
            return _Walk(line, True, end, index, False)
        pos, index, expect_value = end, index + 1, False


def _search_rest(text: str, walk: _Walk) -> str | None:
    """Find the line in the cells from ``pos`` on without decoding every cell.

    The marker has no characters JSON escapes, so a cell holding the line contains the
    literal text ``jupycron``: when it does not occur, there is no line. Otherwise the
    cell around an occurrence is located by Jupyter's layout (a cell starts with
    ``\\n  {\\n   "``, which only a top-level list element can look like since JSON strings
    hold no raw newlines), decoded and checked; cells without an occurrence are skipped.
    When the layout does not fit, the remaining cells are decoded one by one.
    """
    start = walk.pos
    while True:
        p = text.find(_MARKER, start)
        if p < 0:
            return None
        # the cell the first walk stopped in starts just before walk.pos
        s = text.rfind(_CELL_START, max(0, start - 3), p)
        if s < 0:
            break
        try:
            cell, end = _DECODER.raw_decode(text, s + 3)
        except json.JSONDecodeError:
            break
        if not end > p:
            break
        line = _line_in_cell(cell, -1)
        if line is not None:
            return line
        start = end
    return _walk_cells(text, walk.pos, walk.index, True, walk.expect_value).line


def _find_in_text(text: str) -> str | None:
    """The line of a whole decoded notebook in any layout (the slow, general path)."""
    m = _HEAD_RE.match(text)
    if m:
        head = text[:_FIRST_CHUNK]
        walk = _walk_cells(head, m.end(), 0, final=len(head) == len(text))
        if walk.done:
            return walk.line
        return _search_rest(text, walk)
    try:
        nb = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    return find_spec_text(nb)


# --- Jupyter's layout, searched as bytes -------------------------------------------------

class _Outcome:
    """A sentinel from :func:`_find_in_layout` (see there)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_MORE = _Outcome("MORE")          # the answer lies beyond the bytes read so far
_FALLBACK = _Outcome("FALLBACK")  # not Jupyter's layout after all: decode instead

# After "#": blanks as JSON writes them (space, \t-style and \uXXXX escapes, raw non-ASCII
# such as U+00A0), more permissively than the line rule; the exact rule runs on the decoded
# source. Then the marker.
_CANDIDATE_TAIL = re.compile(rb'(?:[ \x80-\xff]|\\[^u]|\\u[0-9A-Fa-f]{4})*jupycron')
# A run of "#" that are not comments (an ASCII-art output, a progress bar) would cost one
# regex call each; past this many misses in one file the search switches to the marker.
_MAX_HASH_MISSES = 2000


class _Candidates:
    """Positions, in order, of text that may be a ``# jupycron`` comment (a superset)."""

    __slots__ = ("data", "misses")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.misses = 0

    def next(self, pos: int) -> int:
        """The first candidate at or after ``pos``, or -1."""
        data = self.data
        while self.misses <= _MAX_HASH_MISSES:
            i = data.find(b"#", pos)
            if i < 0:
                return -1
            if _CANDIDATE_TAIL.match(data, i + 1):
                return i
            self.misses += 1
            pos = i + 1
        return data.find(b"jupycron", pos)


class _Layout:
    """Byte patterns of Jupyter's layout for one newline convention."""

    __slots__ = ("prefix", "cell_open", "cell_close", "key", "cell_type")

    def __init__(self, nl: bytes) -> None:
        self.prefix = b'{' + nl + b' "cells": [' + nl
        self.cell_open = nl + b"  {" + nl
        self.cell_close = nl + b"  }"
        self.key = nl + b'   "'
        self.cell_type = self.key + b'cell_type": "'


_LAYOUTS = (_Layout(b"\n"), _Layout(b"\r\n"))


def _layout_of(data: bytes) -> _Layout | None:
    for layout in _LAYOUTS:
        if data.startswith(layout.prefix):
            return layout
    return None


def _ends_with_brace(data: bytes) -> bool:
    return data[-64:].rstrip().endswith(b"}")


def _decode_json(data: bytes, start: int, end: int) -> Any:
    """Decode the JSON value in ``data[start:end]`` (a trailing comma and blanks allowed)."""
    raw = data[start:end].rstrip()
    if raw.endswith(b","):
        raw = raw[:-1]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 ({exc.reason} at byte {start + exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return _FALLBACK


def _find_in_layout(data: bytes, complete: bool, layout: _Layout) -> Any:
    """The line in ``data`` (Jupyter's layout), ``None`` for no line, or :data:`_MORE` /
    :data:`_FALLBACK`. ``complete`` says whether ``data`` is the whole file.

    Each candidate is placed by the nearest cell opening before it and that cell's closing
    after it, then by the last cell key before it; a candidate outside a ``code`` cell's
    ``source`` moves the search past that key's value (or the cell). Anything that does not
    fit the layout returns :data:`_FALLBACK` rather than guessing.
    """
    candidates = _Candidates(data)
    pos = len(layout.prefix)
    while True:
        p = candidates.next(pos)
        if p >= 0:
            s = data.rfind(layout.cell_open, 0, p)
            if s < 0:
                return _FALLBACK
            e = data.find(layout.cell_close, s)
            if e < 0:
                return _FALLBACK if complete else _MORE
        if p < 0 or e < p:
            # no candidate left in the cells (what follows the list does not count)
            if not complete:
                return _MORE
            if not _ends_with_brace(data):
                raise ValueError("truncated notebook: it does not end with '}'")
            return None
        k = data.rfind(layout.key, s, p)
        if k < 0:
            return _FALLBACK
        name_start = k + len(layout.key)
        colon = data.find(b'": ', name_start, p)
        if colon < 0:
            return _FALLBACK
        following = data.find(layout.key, p, e)
        value_end = e if following < 0 else following
        if data[name_start:colon] != b"source":
            pos = value_end
            continue
        t = data.find(layout.cell_type, s, e)
        if t < 0:
            return _FALLBACK
        if not data.startswith(b'code"', t + len(layout.cell_type), e):
            pos = e
            continue
        source = _decode_json(data, colon + 3, value_end)
        if source is _FALLBACK:
            return _FALLBACK
        line = _line_in_source(source)
        if line is not None:
            return line
        pos = e


# --- reading files -----------------------------------------------------------------------

# Read first: the line is usually in the first cell. A bigger head costs more copying for
# nothing; a smaller one is no cheaper (BENCHMARKS.md, "Numbers moved out of code comments").
_HEAD_BYTES = 16 * 1024


def _read_all(fd: int, size_hint: int) -> bytes:
    """The whole file, from its start (the head is read again: cheaper than joining)."""
    data = os.pread(fd, size_hint + 1, 0)
    if len(data) <= size_hint:
        return data
    parts = [data]  # the file grew since fstat
    offset = len(data)
    while chunk := os.pread(fd, 1 << 20, offset):
        parts.append(chunk)
        offset += len(chunk)
    return b"".join(parts)


def _find_in_fd(fd: int, st: os.stat_result) -> str | None:
    """The text after the first ``# jupycron:`` of a code cell in the open file ``fd``.

    The file is read into fresh ``bytes``: faster than reusing a buffer or than ``mmap``
    once copying is counted, and unlike ``mmap`` a notebook truncated while it is read
    cannot kill the process with SIGBUS.
    """
    data = os.pread(fd, _HEAD_BYTES, 0)
    # a regular file reads short only at its end; the size from fstat confirms it
    complete = len(data) < _HEAD_BYTES and len(data) >= st.st_size
    if len(data) < _HEAD_BYTES and not complete:
        data = _read_all(fd, max(st.st_size, _HEAD_BYTES))
        complete = True
    layout = _layout_of(data)
    result: Any = _FALLBACK
    if layout is not None:
        result = _find_in_layout(data, complete, layout)
        if result is _MORE:
            data = _read_all(fd, st.st_size)
            complete = True
            result = _find_in_layout(data, True, layout)
    if result is _FALLBACK:
        if not complete:
            data = _read_all(fd, st.st_size)
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ValueError(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
        result = _find_in_text(text)
    return result


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc) or type(exc).__name__


def notebook_from_line(rel: str, mtime: float, size: int, line: str | None) -> Notebook:
    """Build the Notebook for the text after ``jupycron:`` (None when there is no line)."""
    if line is None:
        return Notebook(rel, mtime, size, None, NO_LINE)
    try:
        spec = parse_spec(line)
    except SpecError as exc:
        return Notebook(rel, mtime, size, None, f"{INVALID_PREFIX}{exc}")
    return Notebook(rel, mtime, size, spec, None if spec.enabled else DISABLED_IN_LINE)


@dataclass(frozen=True, slots=True)
class _Read:
    """What reading one file gave: its line (or the error) and the stat of what was read."""

    notebook: Notebook
    st: os.stat_result | None
    line: str | None
    error: str | None
    transient: bool  # an OS error: worth retrying even if the file does not change


def _unreadable(rel: str, st: os.stat_result | None, exc: BaseException, transient: bool) -> _Read:
    reason = f"{UNREADABLE_PREFIX}{_describe_error(exc)}"
    nb = Notebook(rel, st.st_mtime if st else 0.0, st.st_size if st else 0, None, reason)
    return _Read(nb, st, None, reason, transient)


def _read(path: str, rel: str) -> _Read:
    """Open, ``fstat`` and read one notebook; never raises."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        try:
            st: os.stat_result | None = os.stat(path)
        except OSError:
            st = None
        return _unreadable(rel, st, exc, True)
    st = None
    try:
        st = os.fstat(fd)
        line = _find_in_fd(fd, st)
    except OSError as exc:
        return _unreadable(rel, st, exc, True)
    except (ValueError, RecursionError, MemoryError) as exc:
        log.warning("cannot read notebook %s: %s", rel, exc)
        return _unreadable(rel, st, exc, isinstance(exc, MemoryError))
    finally:
        os.close(fd)
    return _Read(notebook_from_line(rel, st.st_mtime, st.st_size, line), st, line, None, False)


def read_notebook(path: Path | str, rel: str, stat: os.stat_result | None = None) -> Notebook:
    """Read one notebook's jupycron line. Never raises: problems become ``disabled_reason``.

    ``stat`` is accepted for compatibility and ignored: ``mtime`` and ``size`` come from the
    file actually opened (``fstat``), so they always match what was read.
    """
    return _read(os.fspath(path), rel).notebook
# --- scanning ----------------------------------------------------------------------------

def _dir_id(path: str | Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _is_autorun_name(name: str) -> bool:
    return name.endswith(".ipynb") and "autorun" in name and not name.startswith(".")


def iter_autorun_files(notebooks_dir: Path | str,
                       output_dir: Path | str | None = None) -> Iterator[tuple[str, str]]:
    """Yield ``(absolute path, POSIX relative path)`` of every autorun notebook, unsorted."""
    root = os.path.abspath(notebooks_dir)
    out_id = _dir_id(output_dir) if output_dir is not None else None
    # Only directories named like the output folder (or its resolved target) are stat'ed.
    out_names = ({os.path.basename(os.path.abspath(output_dir)),
                  os.path.basename(os.path.realpath(output_dir))}
                 if out_id is not None and output_dir is not None else set())
    stack = [(root, "")]
    while stack:
        directory, prefix = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = list(it)
        except OSError as exc:
            log.warning("cannot list %s: %s", directory, exc.strerror)
            continue
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            try:
                # like os.walk: a symlink to a directory is a directory (never entered)
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                if entry.is_symlink():
                    continue
                if name in out_names and _dir_id(entry.path) == out_id:
                    continue
                stack.append((entry.path, f"{prefix}{name}/"))
            elif _is_autorun_name(name):
                rel = prefix + name
                try:
                    rel.encode("utf-8")
                except UnicodeEncodeError:
                    log.warning("skipping notebook with a non-UTF-8 file name: %r", rel)
                    continue
                yield entry.path, rel


_CACHE_VERSION = 1
#: the racy-stamp window (:data:`safefiles.stamps.RACY_WINDOW_NS`; tests shorten it)
_RACY_NS = RACY_WINDOW_NS

_Key = tuple[int, int, int, int]


def _key(st: os.stat_result) -> _Key:
    return Stamp.of(st)


@dataclass(slots=True)
class _Entry:
    key: _Key               # the file's safefiles.stamps.Stamp
    line: str | None        # the text after "jupycron:" (None: no line or unreadable)
    error: str | None       # the disabled reason when the file could not be read/parsed
    notebook: Notebook | None = None  # built lazily for entries loaded from disk
    trusted: bool = True    # False: changed too recently to trust the key (not persisted)


class ScanCache:
    """Remembers each notebook's answer by ``(path, rel)`` and the file's
    ``(mtime_ns, size, inode, ctime_ns)``, so unchanged files are only ``stat``\\ ed.

    In memory by default; share one per process (the daemon, the web app) across scans.
    With ``path`` (see :meth:`for_output`) the entries are loaded from that file on first use
    and :func:`scan` writes them back when something changed (temporary file + rename, so
    readers never see half a file; several processes may share it, the last writer wins).
    A missing, unreadable, corrupt or foreign cache file is ignored (and rewritten).
    Entries store the line text, not the parsed spec, so a newer jupycron re-validates them.
    Files whose stamps are racy when read (:mod:`safefiles.stamps`: changed within the file
    system's timestamp granularity) are re-read next time (a change in the same timestamp
    tick could otherwise go unnoticed), and read errors from the OS
    (permissions, I/O) are retried on every scan. Thread-safe.

    >>> cache = ScanCache.for_output("/srv/jupycron-output")
    >>> notebooks = scan("/srv/notebooks", "/srv/jupycron-output", cache)  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._lock = threading.Lock()
        self._loaded = self.path is None
        self._dirty = False
        self._save_failed = False
        self.hits = 0
        self.misses = 0

    @classmethod
    def for_output(cls, output_dir: str | os.PathLike[str]) -> ScanCache:
        """A cache persisted as ``<output_dir>/.scan-cache.json``."""
        return cls(Path(output_dir) / SCAN_CACHE_FILE)

    # -- lookups --
    def get(self, path: str, rel: str, st: os.stat_result) -> Notebook | None:
        """The notebook remembered for this file, or None when it is unknown or changed."""
        with self._lock:
            self._load_locked()
            e = self._entries.get((path, rel))
            if e is None or not e.trusted or e.key != _key(st):
                self.misses += 1
                return None
            self.hits += 1
            if e.notebook is None:
                e.notebook = (Notebook(rel, st.st_mtime, st.st_size, None, e.error)
                              if e.error is not None
                              else notebook_from_line(rel, st.st_mtime, st.st_size, e.line))
            return e.notebook

    def put(self, path: str, rel: str, st: os.stat_result, notebook: Notebook) -> None:
        """Remember ``notebook`` as read from a file with stat ``st``."""
        spec, reason = notebook.spec, notebook.disabled_reason
        if spec is not None:
            line, error = spec.raw, None
        elif reason == NO_LINE:
            line, error = None, None
        else:  # the line text of an invalid spec is not kept in a Notebook: memory only
            line, error = None, reason
        self._put(path, rel, st, line, error, notebook, persist=spec is not None or
                  reason == NO_LINE or (reason or "").startswith(UNREADABLE_PREFIX))

    def _put(self, path: str, rel: str, st: os.stat_result, line: str | None,
             error: str | None, notebook: Notebook, persist: bool = True,
             read_started: int | None = None) -> None:
        """Store an answer; ``read_started`` (``time.time_ns()`` taken before the file was
        read, default now): a racy stamp (:func:`safefiles.stamps.trusted`) is kept for this
        process only, as untrusted."""
        trusted = stamp_trusted(st, time.time_ns() if read_started is None else read_started,
                                _RACY_NS)
        with self._lock:
            self._load_locked()
            self._entries[(path, rel)] = _Entry(_key(st), line, error, notebook,
                                                trusted and persist)
            self._dirty = True

    def _entries_for_scan(self) -> dict[tuple[str, str], _Entry]:
        """The entries dict (loaded), for :func:`scan`'s lock-free lookups."""
        with self._lock:
            self._load_locked()
            return self._entries

    def _count_hits(self, n: int) -> None:
        with self._lock:
            self.hits += n

    def retain(self, keys: set[tuple[str, str]]) -> None:
        """Forget every entry not in ``keys`` (files that vanished)."""
        with self._lock:
            gone = [k for k in self._entries if k not in keys]
            for k in gone:
                del self._entries[k]
            if gone:
                self._dirty = True

    def __len__(self) -> int:
        return len(self._entries)

    # -- persistence --
    def _load_locked(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        assert self.path is not None
        try:
            with open(self.path, "rb") as f:
                doc = json.loads(f.read())
        except FileNotFoundError:
            self._dirty = True
            return
        except (OSError, ValueError) as exc:
            log.warning("ignoring the scan cache %s (%s); it will be rebuilt", self.path, exc)
            self._dirty = True
            return
        try:
            entries = _parse_cache(doc)
        except (TypeError, ValueError) as exc:
            log.warning("ignoring the scan cache %s (%s); it will be rebuilt", self.path, exc)
            self._dirty = True
            return
        entries.update(self._entries)
        self._entries = entries

    def save(self) -> bool:
        """Write the cache file if something changed; True when written. Never raises
        (a failure is logged: the next process simply reads the notebooks again)."""
        if self.path is None:
            return False
        with self._lock:
            if not self._dirty:
                return False
            rows = [[p, r, *e.key, e.line, e.error]
                    for (p, r), e in self._entries.items() if e.trusted]
            self._dirty = False
        data = json.dumps({"version": _CACHE_VERSION, "entries": rows},
                          ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        directory = self.path.parent
        if not directory.is_dir():
            log.debug("not saving the scan cache: %s does not exist", directory)
            return False
        try:
            atomic_write_bytes(self.path, data, durable=False)  # a lost cache is rebuilt
        except OSError as exc:
            # e.g. a web app with read-only access to the output folder: say it once
            log.log(logging.DEBUG if self._save_failed else logging.WARNING,
                    "cannot save the scan cache %s: %s", self.path, exc)
            self._save_failed = True
            with self._lock:
                self._dirty = True
            return False
        return True


def _parse_cache(doc: Any) -> dict[tuple[str, str], _Entry]:
    if not isinstance(doc, dict) or doc.get("version") != _CACHE_VERSION:
        raise ValueError(f"not a version {_CACHE_VERSION} scan cache")
    rows = doc.get("entries")
    if not isinstance(rows, list):
        raise ValueError('"entries" is not a list')
    out: dict[tuple[str, str], _Entry] = {}
    for row in rows:
        if not isinstance(row, list) or len(row) != 8:
            raise ValueError("an entry is not a list of 8 values")
        path, rel, m, size, ino, c, line, error = row
        if not (isinstance(path, str) and isinstance(rel, str)
                and all(type(v) is int for v in (m, size, ino, c))
                and (line is None or isinstance(line, str))
                and (error is None or isinstance(error, str))):
            raise ValueError(f"malformed entry for {rel!r}")
        out[(path, rel)] = _Entry((m, size, ino, c), line, error)
    return out


def scan(notebooks_dir: Path | str, output_dir: Path | str | None = None,
         cache: ScanCache | None = None) -> list[Notebook]:
    """All autorun notebooks under ``notebooks_dir``, sorted by relative path. Never raises
    for a bad notebook (see module docstring); a missing notebooks folder yields ``[]``.

    With ``cache``, unchanged files are only ``stat``\\ ed, vanished ones are forgotten, and
    a persisted cache is saved when something changed.
    """
    if not os.path.isdir(notebooks_dir):
        log.warning("notebooks folder %s does not exist", notebooks_dir)
        return []
    found: list[Notebook] = []
    if cache is None:
        for path, rel in iter_autorun_files(notebooks_dir, output_dir):
            found.append(_read(path, rel).notebook)
    else:
        found = _scan_cached(notebooks_dir, output_dir, cache)
    found.sort(key=_by_path)
    return found


_by_path = operator.attrgetter("path")


def _scan_cached(notebooks_dir: Path | str, output_dir: Path | str | None,
                 cache: ScanCache) -> list[Notebook]:
    """The files of a scan, through ``cache``: an unchanged file costs one ``stat`` and a
    dict lookup (the daemon rescans every 10 s; this loop is its idle cost)."""
    found: list[Notebook] = []
    seen: set[tuple[str, str]] = set()
    # one clock reading per scan: a file changed while the scan runs is never trusted
    started = time.time_ns()
    entries = cache._entries_for_scan()
    hits = 0
    for path, rel in iter_autorun_files(notebooks_dir, output_dir):
        k = (path, rel)
        seen.add(k)
        try:
            st = os.stat(path)
        except OSError as exc:
            found.append(Notebook(rel, 0.0, 0, None, f"{UNREADABLE_PREFIX}{_describe_error(exc)}"))
            continue
        # Fast path, without the lock: entries are replaced whole, never changed in place.
        e = entries.get(k)
        if (e is not None and e.trusted and e.notebook is not None
                and e.key == (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)):
            hits += 1
            found.append(e.notebook)
            continue
        nb = cache.get(path, rel, st)
        if nb is None:
            r = _read(path, rel)
            nb = r.notebook
            if r.st is not None and not r.transient:
                cache._put(path, rel, r.st, r.line, r.error, nb, read_started=started)
        found.append(nb)
    cache._count_hits(hits)
    cache.retain(seen)
    cache.save()
    return found
