"""How a run uses the CPU cores: how many threads torch gets, and how idle threads wait.

CPU results depend on the thread count (sums are split differently), so the count depends only
on the machine and the run's settings, never on what else runs at the moment:

1. `threads=N` (the config key, `--threads`) when given;
2. else `OMP_NUM_THREADS` from the environment, or a count the caller set with
   `torch.set_num_threads` before the run (the user's choice wins);
3. else the usable cores (affinity mask and cgroup CPU quota, not `os.cpu_count()`).

A `threads=` count other than the machine's default is said once: its pixels differ from a default
run's.
The count a run used is recorded in its config, so `--from` and `--resume` repeat it exactly.

Sharing the cores is left to how idle threads wait, which never changes a result. PyTorch's
OpenMP threads spin about 300,000 times before they sleep; beside a busy process every small
operator then waits for a spinner that was descheduled. `wait_policy` picks, before torch
starts its threads: idle threads sleep at once (OMP_WAIT_POLICY=PASSIVE) when other work is busy
at the start, else a short spin (GOMP_SPINCOUNT=1000), which costs a run alone a few per cent and
keeps it bearable when work arrives later (docs/experiments.md#2026-12-06--same-pixels-under-load).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import threading
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

SHORT_SPIN = "1000"  # libgomp spins before an idle thread sleeps, when the machine was idle at the start
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")  # any of them set: the user chose

_WAIT_SET_BY_US: dict[str, str | None] = {}  # the wait variables share_cores set (not the user's)
_SET_BY_US: int | None = None  # the count this process last set, to tell it from the user's own
_ACTIVE = threading.local()  # .plan: the enclosing run_threads' plan in this thread (a batch job, a video)


@dataclass(frozen=True)
class ThreadPlan:
    threads: int
    reason: str  # why this count, for the log and the warning
    cores: int = 1  # the cores this process may use: the default count
    asked: bool = False  # by threads= / --threads (an environment's count is the environment's business)

    @property
    def default(self) -> bool:
        return self.threads == self.cores


def cgroup_cpu_quota(root: str = "/sys/fs/cgroup") -> float | None:
    """The CPU quota of this process's cgroup in cores (v2 cpu.max, or v1 cfs files); None if unlimited."""
    try:
        with open(f"{root}/cpu.max", encoding="ascii") as file:
            quota, period = file.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open(f"{root}/cpu/cpu.cfs_quota_us", encoding="ascii") as file:
            quota = int(file.read())
        with open(f"{root}/cpu/cpu.cfs_period_us", encoding="ascii") as file:
            period = int(file.read())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def affinity_cores() -> int:
    """The CPUs this process may be scheduled on (what torch starts its thread count from)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def usable_cores(affinity: int | None = None, quota: float | None = None) -> int:
    """The cores this process may use: its affinity mask, capped by the cgroup quota (rounded up, as Go does)."""
    affinity = affinity_cores() if affinity is None else affinity
    quota = cgroup_cpu_quota() if quota is None else quota
    return max(1, min(affinity, math.ceil(quota)) if quota else affinity)


def busy_elsewhere(samples: int = 3, interval: float = 0.01, loadavg: str = "/proc/loadavg") -> int:
    """Threads of other processes running or ready to run now (the least of a few quick looks).

    /proc/loadavg's fourth field counts the runnable threads on the machine, this one included;
    the least of several looks ignores a thread that was runnable for an instant.
    """
    counts = []
    for i in range(samples):
        try:
            with open(loadavg, encoding="ascii") as file:
                counts.append(int(file.read().split()[3].split("/")[0]) - 1)
        except (OSError, ValueError, IndexError):
            return 0
        if i + 1 < samples:
            time.sleep(interval)
    return max(0, min(counts))


def env_threads(environ=os.environ) -> int | None:
    value = environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def wait_policy(environ=os.environ, busy: int | None = None) -> dict[str, str | None]:
    """The wait variables that make torch's idle threads share the cores (None: unset), or nothing when
    the user set one (see the module's docstring). `busy`: other processes' busy threads (looked at when None)."""
    if any(environ.get(name) not in (None, _WAIT_SET_BY_US.get(name)) for name in WAIT_VARIABLES):
        return {}
    busy = busy_elsewhere() if busy is None else busy
    return {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": None} if busy else \
        {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": SHORT_SPIN}


def share_cores(environ=os.environ) -> dict[str, str | None]:
    """Set the wait policy in this process's environment before torch is imported (OpenMP reads it
    once, when torch loads it); nothing once torch is imported. Returns what it set."""
    if "torch" in sys.modules:
        return {}
    chosen = wait_policy(environ)
    set_environment(chosen, environ)
    _WAIT_SET_BY_US.update(chosen)
    return chosen


@contextlib.contextmanager
def environment(values: dict[str, str | None], environ=os.environ):
    """These environment variables (None: unset) while the block runs, for the processes it starts."""
    saved = {name: environ.get(name) for name in values}
    set_environment(values, environ)
    try:
        yield
    finally:
        set_environment(saved, environ)


def set_environment(values: dict[str, str | None], environ=os.environ) -> None:
    for name, value in values.items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value


def plan_threads(asked: int | None = None, *, cores: int, environ=os.environ,
                 current: int | None = None, default: int | None = None) -> ThreadPlan:
    """The count for a run (see the module's docstring for the order of the rules).

    `current` is torch's count now and `default` what torch starts with (its affinity count):
    a current count that differs from both torch's default and vqclip's own last choice was set
    by the caller, and is kept.
    """
    if asked is not None:
        return ThreadPlan(asked, f"threads={asked}", cores, asked=True)
    from_env = env_threads(environ)
    if from_env is not None:
        return ThreadPlan(from_env, f"OMP_NUM_THREADS={from_env}", cores)
    if current is not None and current not in (default, _SET_BY_US):
        return ThreadPlan(current, f"torch.set_num_threads({current}) by the caller", cores)
    return ThreadPlan(cores, f"{cores} usable core{'s' if cores > 1 else ''}", cores)


def set_torch_threads(count: int) -> None:
    global _SET_BY_US
    import torch

    torch.set_num_threads(count)
    _SET_BY_US = count


@contextlib.contextmanager
def run_threads(asked: int | None = None, *, quiet: bool = False):
    """Give torch the planned count for one run; yields the plan; the caller's count comes back after.
    A threads= count other than the machine's default is said (`quiet`: not).

    Inside another run_threads (a command, a batch job, a video's frames) the enclosing plan holds
    unless `asked` says otherwise: one job or video uses one count throughout.
    """
    global _SET_BY_US
    import torch

    outer = getattr(_ACTIVE, "plan", None)
    if outer is not None and asked in (None, outer.threads):
        yield outer
        return

    plan = plan_threads(asked, cores=usable_cores(), current=torch.get_num_threads(), default=affinity_cores())
    if plan.asked and not plan.default and not quiet:
        log.warning("%s: %d thread(s) where this machine's default is %d, so the pixels differ from a default "
                    "run's (the run records its count: --from repeats it)", plan.reason, plan.threads, plan.cores)
    previous, previous_ours = torch.get_num_threads(), _SET_BY_US
    set_torch_threads(plan.threads)
    _ACTIVE.plan = plan
    try:
        yield plan
    finally:
        torch.set_num_threads(previous)
        _SET_BY_US, _ACTIVE.plan = previous_ours, outer


def warn_if_cores_are_shared(plan: ThreadPlan) -> None:
    """Say so when other work is busy on the cores a training run's threads need.

    A training step of the small worlds is thousands of short operators, each waiting for every
    thread, so a thread the kernel gives to other work stalls them all however it waits; one thread
    is then faster, but gives other weights, so the count stays the machine's unless asked
    (docs/experiments.md#2026-12-06--same-pixels-under-load).
    """
    busy = busy_elsewhere()
    if plan.threads > 1 and busy and busy + plan.threads > plan.cores:
        log.warning("other work keeps %d thread(s) busy on the %d cores this run uses: training waits for it at "
                    "every step (about 3× slower beside one busy process on 2 cores); --threads 1 is about 1.7× "
                    "faster there, with other weights than a default run's", busy, plan.cores)
