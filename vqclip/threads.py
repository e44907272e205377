"""How many CPU threads a run gives torch: the thread policy.

PyTorch starts one intra-op thread per CPU it may run on and lets idle threads spin. When two
runs share two cores, every small operator waits for a thread that the other run has
descheduled: a 6 s run took 23–200 s beside a second one, and 8 s each with one thread apiece.
So a run takes the cores that are free, not all cores there are:

1. `threads=N` (the config key, `--threads`) when given;
2. else `OMP_NUM_THREADS` from the environment, or a count the caller set with
   `torch.set_num_threads` before the run (the user's choice wins);
3. else the usable cores (affinity mask and cgroup CPU quota, not `os.cpu_count()`) minus the
   threads that other processes keep busy right now, at least 1.

CPU results depend on the thread count (sums are split differently), so the count a run used is
recorded in its config: `--from` and `--resume` use it again and repeat the run exactly.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

_SET_BY_US: int | None = None  # the count this process last set, to tell it from the user's own
_ACTIVE = threading.local()  # .plan: the enclosing run_threads' plan in this thread (a batch job, a video)


@dataclass(frozen=True)
class ThreadPlan:
    threads: int
    reason: str  # why this count, for the log and the warning
    busy: int = 0  # threads other processes kept busy when the plan was made
    cores: int = 1  # the cores this process may use
    chosen: bool = False  # by the policy from the free cores (not asked for, not the environment's)


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


def plan_threads(asked: int | None = None, *, cores: int, busy: int, environ=os.environ,
                 current: int | None = None, default: int | None = None) -> ThreadPlan:
    """The count for a run (see the module's docstring for the order of the rules).

    `current` is torch's count now and `default` what torch starts with (its affinity count):
    a current count that differs from both torch's default and vqclip's own last choice was set
    by the caller, and is kept.
    """
    if asked is not None:
        return ThreadPlan(asked, f"threads={asked}", busy, cores)
    from_env = env_threads(environ)
    if from_env is not None:
        return ThreadPlan(from_env, f"OMP_NUM_THREADS={from_env}", busy, cores)
    if current is not None and current not in (default, _SET_BY_US):
        return ThreadPlan(current, f"torch.set_num_threads({current}) by the caller", busy, cores)
    free = max(1, cores - busy)
    reason = f"{free} of {cores} cores" + (f" ({busy} busy with other work)" if busy else "")
    return ThreadPlan(free, reason, busy, cores, chosen=True)


def set_torch_threads(count: int) -> None:
    global _SET_BY_US
    import torch

    torch.set_num_threads(count)
    _SET_BY_US = count


@contextlib.contextmanager
def run_threads(asked: int | None = None, *, quiet: bool = False):
    """Give torch the planned count for one run; yields the plan; the caller's count comes back after.
    `quiet`: no warning when every core is busy (the plan is the same).

    Inside another run_threads (a batch job, a video's frames) the enclosing plan holds unless
    `asked` says otherwise: one job or video uses one count throughout.
    """
    global _SET_BY_US
    import torch

    outer = getattr(_ACTIVE, "plan", None)
    if asked is None and outer is not None:
        yield outer
        return

    busy = busy_elsewhere() if asked is None and env_threads() is None else 0  # only the last rule looks
    plan = plan_threads(asked, cores=usable_cores(), busy=busy, current=torch.get_num_threads(),
                        default=affinity_cores())
    if plan.chosen and plan.busy >= plan.cores and not quiet:
        log.warning("%d threads of other work are busy on the %d core(s) this run may use: it takes 1 thread "
                    "and may run several times slower than alone (set threads= to choose)", plan.busy, plan.cores)
    previous, previous_ours = torch.get_num_threads(), _SET_BY_US
    set_torch_threads(plan.threads)
    _ACTIVE.plan = plan
    try:
        yield plan
    finally:
        torch.set_num_threads(previous)
        _SET_BY_US, _ACTIVE.plan = previous_ours, outer
