"""Executing a shipped notebook in a real kernel and reading what it showed (the notebook
end-to-end tests)."""

from __future__ import annotations

import nbformat
from nbclient import NotebookClient

from tests.support.services import REPO

NOTEBOOKS = REPO / "notebooks"


def execute(name: str, env: dict[str, str] | None = None) -> nbformat.NotebookNode:
    """Run notebooks/<name>.ipynb (cwd = the notebooks folder) in a fresh python3 kernel whose
    environment is ``env`` (default: this process's); a failing cell raises
    :class:`nbclient.exceptions.CellExecutionError` with its traceback."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute(env=env) if env is not None else client.execute()
    return nb


def output_text(nb: nbformat.NotebookNode, chart: str = "<chart>") -> str:
    """Every stream and displayed value of an executed notebook as text (HTML when the
    value has it), with ``chart`` standing for each SVG/PNG image."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.text)
            elif out.output_type in ("execute_result", "display_data"):
                data = out.get("data", {})
                parts.append(data.get("text/html") or data.get("text/plain", ""))
                if "image/svg+xml" in data or "image/png" in data:
                    parts.append(chart)
    return "\n".join(parts)
