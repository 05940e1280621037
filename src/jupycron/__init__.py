"""jupycron: run Jupyter notebooks on the schedule written in their first code cell.

    from jupycron import load_settings, tick, run_now
    settings = load_settings({"notebooks": "/srv/notebooks"})
    run = run_now(settings, "daily_autorun.ipynb")
    print(run.status, run.output)

Names resolve lazily (PEP 562): ``import jupycron`` stays cheap (the web app and the CLI's
``--help`` do not pay for nbclient/nbconvert), and ``__all__`` is the public API (tested).
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it (relative to this package)
_EXPORTS: dict[str, str] = {
    # settings
    "Settings": ".config",
    "load_settings": ".config",
    # value types
    "JobSpec": ".models",
    "Notebook": ".models",
    "Run": ".models",
    "RunStatus": ".models",
    "Trigger": ".models",
    # errors
    "AlreadyRunning": ".exceptions",
    "ConfigError": ".exceptions",
    "HistoryError": ".exceptions",
    "JupycronError": ".exceptions",
    "NotebookNotFound": ".exceptions",
    "SpecError": ".exceptions",
    # discovery, the run ledger
    "RunStore": ".ledger",
    "open_store": ".ledger",
    "scan": ".discovery",
    # running
    "MemoryCap": ".limits",
    "detect_method": ".limits",
    "run_notebook": ".runner",
    # scheduling
    "run_forever": ".scheduler",
    "run_now": ".scheduler",
    "tick": ".scheduler",
    # status (what every page, command, metric and alert shows)
    "NotebookState": ".status",
    "StatusRow": ".status",
    "build_rows": ".status",
    "current_rows": ".status",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'jupycron' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
