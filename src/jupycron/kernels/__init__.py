"""The kernel lifecycle behind one interface (:class:`KernelProvider`), in a fresh and a
pooled flavour, with the fork server inside.

=====================  ===================================================================
``base``               :class:`KernelHandle`, the provider interface, killing a kernel's tree
``fresh``              :class:`FreshKernels`: a new kernel per run (started or forked)
``pooled``             :class:`KernelPool`: kernels started ahead of need
``forkserver``         kernels forked from a template process (``template.py``, a program)
``env``                the environment a notebook's kernel runs with
=====================  ===================================================================
"""

from .base import (
    KERNEL_START_TIMEOUT_S,
    RUN_ID_ENV,
    KernelHandle,
    KernelProvider,
    KernelRequest,
    KernelStartError,
    discard,
    kill_marked,
    kill_tree,
)
from .env import kernel_env
from .fresh import FreshKernels, start_kernel
from .pooled import KernelPool, pool_size, preimport_modules

__all__ = ["KERNEL_START_TIMEOUT_S", "RUN_ID_ENV", "FreshKernels", "KernelHandle",
           "KernelPool", "KernelProvider", "KernelRequest", "KernelStartError", "discard",
           "kernel_env", "kill_marked", "kill_tree", "pool_size", "preimport_modules",
           "start_kernel"]
