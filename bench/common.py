"""What the benchmarks share: the environment that numpy and torch read when they load, set as the
CLI sets it (so every benchmark imports this module first: pyproject.toml's isort settings put it
there), the machine line they print first, a median timer and the environment of child processes."""

import os
import platform
import statistics
import time

from fusecli.runtime import library_defaults, usable_cores

#: The environment as the user gave it: comparators (MergeMertens, enfuse) run in it, as users run them.
USER_ENV = dict(os.environ)
library_defaults()  # as the CLI does, before numpy and torch load
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
    """The environment of a child process, fusecli's or a comparator's: the user's (:data:`USER_ENV`:
    fusecli's entry point sets its own defaults, as it does for a user), this checkout first on
    PYTHONPATH, then whatever PYTHONPATH already held (packages installed there by path, as on a
    lent GPU machine), and ``extra``."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return dict(USER_ENV, PYTHONPATH=os.pathsep.join(filter(None, [root, USER_ENV.get("PYTHONPATH")])), **extra)
