"""Process-wide set-up that only an entry point (the CLI, a benchmark) may do, never a library import.

On Linux with glibc, every tensor above the mmap threshold (32 MiB at most) is mapped fresh from the
kernel and returned on free, so each large temporary costs page faults and zeroing: most of the
loss's CPU time at training sizes (``python bench/bench_losses.py --system-malloc`` measures it).
Keeping freed memory in the heap (as the jemalloc/tcmalloc that PyTorch's CPU performance guide
recommends would) removes that cost.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_configured = False


def keep_freed_memory() -> bool:
    """Ask glibc to serve large blocks from the heap, from one arena for every thread, and not return
    freed memory to the kernel.

    Returns True when the setting was applied (Linux + glibc), False elsewhere (a no-op).
    """
    global _configured
    if _configured:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = (
            libc.mallopt(_M_MMAP_MAX, 0) == 1
            and libc.mallopt(_M_TRIM_THRESHOLD, 2**30) == 1
            and libc.mallopt(_M_TOP_PAD, 64 * 2**20) == 1
            # one arena for every thread: what the decode thread frees serves the fusion and the
            # writer (glibc gives each thread its own arena, and kept memory is kept per arena)
            and libc.mallopt(_M_ARENA_MAX, 1) == 1
        )
    except (OSError, AttributeError):
        return False
    _configured = ok
    return ok


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


#: What the native libraries read from the environment when they load (a value the user set is kept).
LIBRARY_DEFAULTS = {
    # PyTorch's OpenMP threads sleep, not spin, between parallel regions, so the stages beside the
    # model (decoding the next stack, writing the last) get a core; the model alone is slower so,
    # the pipeline faster (bench/bench_enfuse.py)
    "OMP_WAIT_POLICY": "PASSIVE",
    # NumPy asks the kernel for transparent huge pages for every array of 4 MiB and more; under the
    # kernel's default defrag setting ("madvise") the first touch of such memory waits for memory
    # compaction while the heap grows (system time on every large TIFF or DNG stack)
    "NUMPY_MADVISE_HUGEPAGE": "0",
}


def library_defaults() -> None:
    """Put :data:`LIBRARY_DEFAULTS` that the user has not set into this process's environment. Must run
    before numpy and torch are imported (they read them when they load): the CLI's entry point and
    the benchmarks' common module call it first."""
    for name, value in LIBRARY_DEFAULTS.items():
        os.environ.setdefault(name, value)


def pick_device(name: str):
    """``auto`` (CUDA when present, else CPU), ``cpu`` or ``cuda[:N]``; CUDA asked for but absent is a
    user error (no silent fallback: a user who asks for the GPU wants to know it is not used)."""
    import torch

    from fusecli.errors import FuseError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise FuseError("--device cuda: no CUDA device is available (use --device cpu or auto)")
        return torch.device(name)
    if name != "cpu":
        raise FuseError(f"--device {name!r}: expected auto, cpu or cuda")
    return torch.device("cpu")
