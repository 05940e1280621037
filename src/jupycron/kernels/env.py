"""The environment a notebook's kernel runs with (also the authoring editor's kernels)."""

from __future__ import annotations

import os
from pathlib import Path

from .base import RUN_ID_ENV

__all__ = ["kernel_env"]


def kernel_env(run_id: str, notebook_rel: str, output_dir: Path | None = None) -> dict[str, str]:
    """The kernel's environment: ours plus ``AUTORUN=1`` and the run marker.

    ``JUPYCRON_STATE_DIR`` (where notebooks keep what they already alerted on) defaults to
    ``<output>/.state``: writable under the hardened systemd units, never served (a dot
    folder), and kept with the outputs it belongs to.
    """
    env = dict(os.environ)
    env.update({"AUTORUN": "1", RUN_ID_ENV: run_id, "JUPYCRON_NOTEBOOK": notebook_rel,
                "PYDEVD_DISABLE_FILE_VALIDATION": "1"})
    if output_dir is not None:
        env.setdefault("JUPYCRON_STATE_DIR", str(output_dir / ".state"))
    return env
