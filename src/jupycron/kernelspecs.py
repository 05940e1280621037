"""Which Jupyter kernel runs a notebook.

A notebook names its kernel in ``metadata.kernelspec.name`` (``python3``, ``ir``, ...). It
runs with that kernel when it is installed; the configured default (``kernel_name``) is used
only when the notebook names none (no ``kernelspec``, or one without ``name``). A named
kernel that is not installed is an error (:class:`KernelNotInstalled`): running an R
notebook on Python would only fail later with a misleading ``NameError``.

Kernel names are matched case-insensitively, as jupyter_client does.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager

log = logging.getLogger(__name__)

__all__ = ["KernelChoice", "KernelNotInstalled", "choose_kernel", "installed_kernels", "named_kernel"]


class KernelNotInstalled(LookupError):
    """The notebook names a kernel this host does not have."""

    def __init__(self, name: str, installed: list[str]) -> None:
        self.name = name
        self.installed = installed
        super().__init__(f"the notebook asks for kernel {name!r}, which is not installed here "
                         f"(installed: {', '.join(installed) or 'none'}); install it "
                         f"(jupyter kernelspec list) or change the notebook's kernel")


@dataclass(frozen=True)
class KernelChoice:
    """The kernel a run uses; ``named``: the notebook named it (else the default)."""

    name: str
    named: bool


def named_kernel(metadata: Mapping[str, Any]) -> str | None:
    """The kernel name in a notebook's metadata, or None when it names none."""
    spec = metadata.get("kernelspec")
    if not isinstance(spec, Mapping):
        return None
    name = spec.get("name")
    return name.strip() if isinstance(name, str) and name.strip() else None


def installed_kernels() -> list[str]:
    """The names of the kernels jupyter_client finds (``JUPYTER_PATH``, the venv, ...)."""
    return sorted(KernelSpecManager().find_kernel_specs())


def choose_kernel(metadata: Mapping[str, Any], default: str) -> KernelChoice:
    """The kernel for a notebook with this metadata; raises :class:`KernelNotInstalled`.

    The default kernel is not looked up here: starting it reports its own error.
    """
    name = named_kernel(metadata)
    if name is None:
        return KernelChoice(default, named=False)
    if name.lower() == default.lower():
        return KernelChoice(default, named=True)
    installed = installed_kernels()
    if name.lower() not in {k.lower() for k in installed}:
        raise KernelNotInstalled(name, installed)
    return KernelChoice(name, named=True)
