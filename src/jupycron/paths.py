"""Where jupycron keeps its files inside the output folder (pure path arithmetic, no I/O).

For the notebook ``a/b_autorun.ipynb`` (its path relative to the notebooks folder)::

    <output>/a/b_autorun.html                       latest run's HTML (replaced by every run)
    <output>/a/b_autorun.success-<run_id>.html      copy of the latest *successful* run's HTML;
                                                    jupycron.retention removes the previous
                                                    copy when a newer success supersedes it
    <output>/.jupycron.sqlite (+ -wal, -shm)        the run ledger: runs, notebooks, alert
                                                    state, heartbeat (jupycron.ledger)
    <output>/.locks/slot-<k>.lock                   global run slots (fcntl.flock)
    <output>/.history.json.imported                 an older version's history, once imported
    <output>/summary.html                           static status page

Run ids are ``<UTC yyyymmddTHHMMSS>-<6 hex>`` so kept copies sort by time.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

__all__ = [
    "KEPT_INFIX",
    "history_file",
    "kept_html",
    "kept_html_glob",
    "lock_file",
    "notebook_for_output",
    "output_html",
    "summary_file",
    "validate_rel",
]

KEPT_INFIX = ".success-"
_RUN_ID_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_-]*$")
_KEPT_RE = re.compile(r"^(?P<stem>.+)\.success-(?P<run_id>[0-9A-Za-z][0-9A-Za-z_-]*)\.html$")
_RESERVED_TOP = {"summary.html"}


def validate_rel(rel: str) -> PurePosixPath:
    """Check that ``rel`` is a relative POSIX path to an ``.ipynb`` that stays inside its folder."""
    p = PurePosixPath(rel)
    if not rel or p.is_absolute() or any(part in ("", ".", "..") for part in p.parts):
        raise ValueError(f"notebook path must be relative without '..': {rel!r}")
    if p.suffix != ".ipynb":
        raise ValueError(f"notebook path must end with .ipynb: {rel!r}")
    return p


def _stem(rel: str) -> PurePosixPath:
    p = validate_rel(rel)
    return p.with_suffix("")


def output_html(output_dir: Path, rel: str) -> Path:
    """``<output>/<rel minus .ipynb>.html``: the latest run's HTML, whatever its outcome."""
    return Path(output_dir) / f"{_stem(rel)}.html"


def kept_html(output_dir: Path, rel: str, run_id: str) -> Path:
    """``<output>/<rel minus .ipynb>.success-<run_id>.html``: the latest successful run's copy."""
    if not _RUN_ID_RE.match(run_id):
        raise ValueError(f"run id may hold only letters, digits, '-' and '_': {run_id!r}")
    return Path(output_dir) / f"{_stem(rel)}{KEPT_INFIX}{run_id}.html"


def kept_html_glob(rel: str) -> str:
    """Glob (relative to the output folder) matching every kept success copy of ``rel``."""
    stem = _stem(rel)
    return f"{_glob_escape(str(stem))}{KEPT_INFIX}*.html"


def _glob_escape(s: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", s)


def notebook_for_output(output_rel: str) -> tuple[str, str | None] | None:
    """Map an HTML path relative to the output folder back to ``(notebook rel, run_id or None)``.

    ``a/b_autorun.html`` -> ``("a/b_autorun.ipynb", None)``; a kept copy
    ``a/b_autorun.success-<id>.html`` -> ``("a/b_autorun.ipynb", "<id>")``. Returns None for
    files jupycron did not write for a notebook (summary.html, hidden files, non-autorun names).
    """
    p = PurePosixPath(output_rel)
    if p.suffix != ".html" or any(part.startswith(".") for part in p.parts):
        return None
    if str(p) in _RESERVED_TOP:
        return None
    m = _KEPT_RE.match(p.name)
    if m:
        nb, run_id = p.with_name(m.group("stem") + ".ipynb"), m.group("run_id")
    else:
        nb, run_id = p.with_suffix(".ipynb"), None
    if "autorun" not in nb.name:
        return None
    return str(nb), run_id


def lock_file(output_dir: Path, rel: str) -> Path:
    """``<output>/.locks/<rel>.lock``: the per-notebook run lock of versions before the run
    ledger's claim rule; removed with the notebook's outputs on purge."""
    validate_rel(rel)
    return Path(output_dir) / ".locks" / f"{rel}.lock"


def history_file(output_dir: Path) -> Path:
    """``<output>/.history.json``: the history of versions before the run ledger (imported
    once by :mod:`jupycron.ledger.importer`)."""
    return Path(output_dir) / ".history.json"


def summary_file(output_dir: Path) -> Path:
    """``<output>/summary.html``."""
    return Path(output_dir) / "summary.html"
