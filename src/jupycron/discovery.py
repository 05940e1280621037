"""Find autorun notebooks and read their ``# jupycron: {...}`` line. Read-only: never writes.

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

Fast path: notebooks written by Jupyter start with ``{"cells": [``. The first 16 KiB are read
and the cells in it decoded one by one with the C JSON decoder; usually the line is there and
reading stops. Otherwise the rest is read and searched for the literal ``jupycron`` (JSON does
not escape any of its letters): no occurrence means no line, and only the cells around an
occurrence are decoded (found by Jupyter's indentation, verified by decoding). Other layouts
fall back to decoding cell by cell, and files not starting with ``"cells"`` (another key order,
nbformat 3 ``worksheets``) to a full parse. Only what was decoded is validated: a notebook
truncated after its jupycron line is still listed, and its run fails.

Nothing here raises out of :func:`scan` or :func:`read_notebook`: an unreadable or corrupt
notebook is returned disabled with ``disabled_reason = "cannot read notebook: ..."``.
"""

from __future__ import annotations

import codecs
import functools
import json
import logging
import math
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .exceptions import SpecError
from .models import JobSpec, Notebook
from .schedule import normalise_every, validate_cron, validate_tz

log = logging.getLogger(__name__)

__all__ = [
    "DISABLED_IN_LINE",
    "KNOWN_KEYS",
    "NO_LINE",
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
KNOWN_KEYS = ("every", "cron", "tz", "MaxMem", "MaxRuntime", "enabled")

_MARKER = "jupycron"
_LINE_RE = re.compile(r"^\s*#\s*jupycron\s*:(.*)$")
_HEAD_RE = re.compile(r'\s*\{\s*"cells"\s*:\s*\[')
_CELL_START = '\n  {\n   "'
_WS_RE = re.compile(r"\s*")
_FIRST_CHUNK = 16 * 1024
_UTF8 = codecs.getincrementaldecoder("utf-8-sig")
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
    (MB, positive; fractions are rounded up), ``MaxRuntime`` (seconds, positive) and
    ``enabled`` (bool). Unknown keys, wrong types and duplicate keys are errors.

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
    return JobSpec(every=every, cron=cron, tz=tz,
                   max_mem_mb=math.ceil(max_mem) if max_mem is not None else None,
                   max_runtime_s=max_runtime, enabled=enabled, raw=text)


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


def _read_rest(fd: int) -> bytes:
    parts = []
    while chunk := os.read(fd, 1 << 20):
        parts.append(chunk)
    return b"".join(parts)


def _find_in_file(path: str) -> str | None:
    """The text after the first ``# jupycron:`` of a code cell (see the module docstring)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        head = os.read(fd, _FIRST_CHUNK)
        # a regular file returns a short read only at its end
        complete = len(head) < _FIRST_CHUNK
        dec = _UTF8()
        text = dec.decode(head, final=complete)
        m = _HEAD_RE.match(text)
        if m:
            walk = _walk_cells(text, m.end(), 0, final=complete)
            if walk.done:
                return walk.line
            text += dec.decode(_read_rest(fd), final=True)
            return _search_rest(text, walk)
        if not complete:
            text += dec.decode(_read_rest(fd), final=True)
    finally:
        os.close(fd)
    try:
        nb = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    return find_spec_text(nb)


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 ({exc.reason} at byte {exc.start})"
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


def read_notebook(path: Path | str, rel: str, stat: os.stat_result | None = None) -> Notebook:
    """Read one notebook's jupycron line. Never raises: problems become ``disabled_reason``."""
    try:
        st = stat if stat is not None else os.stat(path)
    except OSError as exc:
        return Notebook(rel, 0.0, 0, None, f"{UNREADABLE_PREFIX}{_describe_error(exc)}")
    try:
        line = _find_in_file(os.fspath(path))
    except (OSError, ValueError, RecursionError, MemoryError) as exc:
        log.warning("cannot read notebook %s: %s", rel, exc)
        return Notebook(rel, st.st_mtime, st.st_size, None, f"{UNREADABLE_PREFIX}{_describe_error(exc)}")
    return notebook_from_line(rel, st.st_mtime, st.st_size, line)


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

    def onerror(exc: OSError) -> None:
        log.warning("cannot list %s: %s", exc.filename, exc.strerror)

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=False):
        keep = []
        for d in dirnames:
            if d.startswith("."):
                continue
            if d in out_names and _dir_id(os.path.join(dirpath, d)) == out_id:
                continue
            keep.append(d)
        dirnames[:] = keep
        rel_dir = os.path.relpath(dirpath, root)
        prefix = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        for name in filenames:
            if not _is_autorun_name(name):
                continue
            rel = prefix + name
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError:
                log.warning("skipping notebook with a non-UTF-8 file name: %r", rel)
                continue
            yield os.path.join(dirpath, name), rel


@dataclass
class _Entry:
    mtime_ns: int
    size: int
    notebook: Notebook


class ScanCache:
    """Remembers parsed notebooks by ``(path, mtime_ns, size)`` so unchanged files are not read.

    Thread-safe; share one per process (e.g. the daemon and the web app) across scans.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, path: str, rel: str, st: os.stat_result) -> Notebook | None:
        with self._lock:
            e = self._entries.get((path, rel))
            if e is not None and e.mtime_ns == st.st_mtime_ns and e.size == st.st_size:
                self.hits += 1
                return e.notebook
            self.misses += 1
            return None

    def put(self, path: str, rel: str, st: os.stat_result, notebook: Notebook) -> None:
        with self._lock:
            self._entries[(path, rel)] = _Entry(st.st_mtime_ns, st.st_size, notebook)

    def retain(self, keys: set[tuple[str, str]]) -> None:
        """Forget every entry not in ``keys`` (files that vanished)."""
        with self._lock:
            for k in [k for k in self._entries if k not in keys]:
                del self._entries[k]

    def __len__(self) -> int:
        return len(self._entries)


def scan(notebooks_dir: Path | str, output_dir: Path | str | None = None,
         cache: ScanCache | None = None) -> list[Notebook]:
    """All autorun notebooks under ``notebooks_dir``, sorted by relative path. Never raises
    for a bad notebook (see module docstring); a missing notebooks folder yields ``[]``."""
    if not os.path.isdir(notebooks_dir):
        log.warning("notebooks folder %s does not exist", notebooks_dir)
        return []
    found: list[Notebook] = []
    seen: set[tuple[str, str]] = set()
    for path, rel in iter_autorun_files(notebooks_dir, output_dir):
        try:
            st = os.stat(path)
        except OSError as exc:
            found.append(Notebook(rel, 0.0, 0, None, f"{UNREADABLE_PREFIX}{_describe_error(exc)}"))
            continue
        seen.add((path, rel))
        nb = cache.get(path, rel, st) if cache is not None else None
        if nb is None:
            nb = read_notebook(path, rel, st)
            if cache is not None:
                cache.put(path, rel, st, nb)
        found.append(nb)
    if cache is not None:
        cache.retain(seen)
    found.sort(key=lambda n: n.path)
    return found
