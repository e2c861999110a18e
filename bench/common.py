"""What the benchmarks share: the machine line they print first, and a median timer."""

import os
import platform
import statistics
import time

from fusecli.runtime import passive_openmp_threads, usable_cores

passive_openmp_threads()  # as the CLI does, before torch is imported
import torch  # noqa: E402


def describe() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = usable_cores()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    return (
        f"machine: {cpu}, {cores} cores usable, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), {device}, Python {platform.python_version()}"
    )


def median_seconds(fn, repeat: int, warmup: int = 1, sync=None) -> float:
    """Median wall time of ``fn()`` over ``repeat`` runs after ``warmup`` untimed ones.

    ``sync`` (e.g. torch.cuda.synchronize) is called before each clock read when given.
    """
    times = []
    for i in range(warmup + repeat):
        if sync:
            sync()
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def child_env(**extra: str) -> dict:
    """The environment of a ``python -m fusecli`` child process: this checkout first on PYTHONPATH,
    then whatever PYTHONPATH already held (packages installed there by path, as on a lent GPU
    machine), and ``extra``."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])), **extra)
