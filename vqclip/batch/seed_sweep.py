"""Seed sweeps that keep the best: successive halving over seeds (`vqclip sweep`, the `sweep` batch kind).

Every seed starts a run of the same settings. After each round the better half by CLIP score goes
on and the rest stop, until `keep` runs remain, which spend what is left. The budget is what `keep`
plain runs would take (keep × steps optimiser steps), split evenly between the rounds: many seeds
are looked at briefly, and the promising ones are given the most steps.

A run goes on by resuming its own folder (vqclip.generation.resume), so each survivor's pixels are
those of a single run of its final length. A sweep stopped at any moment goes on from where it
was when it is started again with the same settings and folder.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from ..errors import UserError
from .kinds import JobOutput, register_kind

SUMMARY, SETTINGS, CONTACT_SHEET, ROUNDS = "summary.jsonl", "sweep.json", "contact_sheet.png", "rounds.jsonl"
NOT_THE_SWEEP = ("quiet", "output", "run_dir", "outputs_root")  # where and how loudly: not what it makes


@dataclass(frozen=True)
class Round:
    size: int  # runs in the round
    steps: int  # the step count each of them reaches in it


def halving_rounds(seeds: int, keep: int, steps: int) -> list[Round]:
    """The rounds of a sweep: `seeds` runs halved (rounding up) down to `keep`, each round with an
    equal share of keep × steps optimiser steps; the last round spends what is left."""
    if not 1 <= keep < seeds:
        raise UserError(f"--keep {keep} must be at least 1 and below --seeds {seeds}: a sweep keeps fewer runs "
                        "than it starts")
    sizes = [seeds]
    while sizes[-1] > keep:
        sizes.append(max(keep, math.ceil(sizes[-1] / 2)))
    budget, share = keep * steps, keep * steps / len(sizes)
    rounds, reached, spent = [], 0, 0
    for size in sizes[:-1]:
        more = max(1, int(share // size))
        reached, spent = reached + more, spent + more * size
        rounds.append(Round(size, reached))
    last = (budget - spent) // keep
    if last < 1:
        raise UserError(f"--steps {steps} is too few for {seeds} seeds kept down to {keep}: the rounds before the "
                        f"last take {spent} of the {budget} steps; raise --steps to {math.ceil((spent + keep) / keep)} "
                        "or more, or sweep fewer seeds")
    return [*rounds, Round(keep, reached + last)]


@dataclass
class SeedRun:
    seed: int
    score: float
    steps: int
    run_dir: Path
    seconds: float = 0.0


@dataclass
class SweepResult:
    runs: list[SeedRun]  # every seed, best first: the kept ones, then by their last score
    kept: int
    out: Path

    @property
    def best(self) -> SeedRun:
        return self.runs[0]


def sweep(config: DictConfig, out: str | Path, seeds: int, keep: int, models=None, ray=None) -> SweepResult:
    """Successive halving over `seeds` seeds (config.seed, else 0, and on) of the run `config`
    describes; its `steps` sets the budget. Writes a run folder per seed under `out`, rounds.jsonl (a
    line per seed and round, as they finish), summary.jsonl (a line per seed, best first) and
    contact_sheet.png.

    `ray`: run each round's seeds at once as Ray tasks (True: a new local Ray; or the cluster's
    address), on workers that see `out`. Each task takes config.threads CPUs (unset: one, recorded
    with its runs); with the same threads, the scores and so the order are a local sweep's.
    """
    from ..outputs import append_jsonl, read_jsonl

    rounds = halving_rounds(seeds, keep, int(config.steps))
    out = Path(out)
    first = int(config.seed or 0)
    _claim(out, config, seeds, keep)
    # What a stopped sweep did: each round is judged by the scores of its own step count.
    done = {(record["round"], record["seed"]): record for record in read_jsonl(out / ROUNDS)} \
        if (out / ROUNDS).is_file() else {}
    run_round = _RayRounds(config, out, ray) if ray else _LocalRounds(config, out, models)
    alive, last = list(range(first, first + seeds)), {}
    with run_round:
        for number, round_ in enumerate(rounds):
            for record in run_round(number, round_.steps, [seed for seed in alive if (number, seed) not in done]):
                append_jsonl(out / ROUNDS, record)
                done[(number, record["seed"])] = record
            for seed in alive:
                record = done[(number, seed)]
                seconds = record["seconds"] + (last[seed].seconds if seed in last else 0.0)
                last[seed] = SeedRun(seed, record["score"], record["steps"], out / f"seed-{seed}", seconds)
            ranked = sorted(alive, key=lambda seed: -last[seed].score)
            alive = ranked[:rounds[number + 1].size] if number + 1 < len(rounds) else ranked
    order = alive + sorted((seed for seed in last if seed not in alive), key=lambda seed: -last[seed].score)
    result = SweepResult([last[seed] for seed in order], keep, out)
    _write_summary(result, config)
    return result


def _seed_round(config: DictConfig, out: Path, number: int, seed: int, steps: int, models) -> dict:
    """One seed's run taken to `steps` in round `number`: its line of rounds.jsonl."""
    import time

    started = time.perf_counter()
    result = _run_to(config, out / f"seed-{seed}", seed, steps, models)
    return {"round": number, "seed": seed, "steps": steps, "score": float(result.scores[0]),
            "seconds": round(time.perf_counter() - started, 3)}


class _LocalRounds:
    """A round's seeds one after another in this process, the models loaded once."""

    def __init__(self, config: DictConfig, out: Path, models):
        self.config, self.out, self.models = config, out, models

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def __call__(self, number: int, steps: int, seeds: list[int]):
        from ..loading import load_models

        for seed in seeds:
            self.models = self.models or load_models(self.config)
            yield _seed_round(self.config, self.out, number, seed, steps, self.models)


class _RayRounds:
    """A round's seeds at once, one Ray task each (a CPU each, unless the config sets threads),
    answered as they finish."""

    def __init__(self, config: DictConfig, out: Path, address):
        self.config, self.out, self.address = config, out, None if address is True else address
        self.started = False

    def __enter__(self):
        from .ray_tasks import connect

        self.started = connect(self.address)
        return self

    def __exit__(self, *exc) -> None:
        if self.started:
            import ray

            ray.shutdown()

    def __call__(self, number: int, steps: int, seeds: list[int]):
        import ray

        from ..config import to_yaml

        threads = int(self.config.threads or 1)
        task = ray.remote(num_cpus=threads, max_calls=0)(sweep_seed_task)
        settings = to_yaml(self.config)
        waiting = {task.remote(settings, str(self.out.resolve()), number, seed, steps, threads): seed
                   for seed in seeds}
        try:
            while waiting:
                finished, _ = ray.wait(list(waiting), num_returns=1)
                for ref in finished:
                    waiting.pop(ref)
                    try:
                        yield ray.get(ref)
                    except UserError:
                        raise
                    except Exception as exc:  # noqa: BLE001 - a worker that died ends the sweep, said in one line
                        raise UserError(f"a Ray task of the sweep failed ({type(exc).__name__}); the sweep goes on "
                                        "from its last finished run when started again") from None
        finally:
            for ref in waiting:
                ray.cancel(ref)


def sweep_seed_task(settings: str, out: str, number: int, seed: int, steps: int, threads: int) -> dict:
    """The Ray task: one seed's run of round `number`, in the sweep's own folder."""
    import yaml

    from ..config import build_config
    from ..loading import load_models
    from .generate_kind import model_key
    from .kinds import WORKER_CACHE

    if not (Path(out) / SETTINGS).is_file():
        raise UserError(f"vqclip sweep --ray needs Ray workers that see {out} (the same machine, or a shared "
                        "folder): its runs go on from round to round there")
    config = build_config(None, yaml.safe_load(settings))
    config.threads = config.threads or threads  # the task's share of the cores, recorded with the run
    models = WORKER_CACHE.get(model_key(config), lambda: load_models(config))
    return _seed_round(config, Path(out), number, seed, steps, models)


def _claim(out: Path, config: DictConfig, seeds: int, keep: int) -> None:
    """`out` is new, or holds this very sweep (which then goes on): never another one's runs."""
    from ..atomic import atomic_write_text
    from ..config import to_dict

    asked = {key: value for key, value in to_dict(config).items() if key not in NOT_THE_SWEEP}
    settings = json.dumps({"config": asked, "seeds": seeds, "keep": keep}, sort_keys=True)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: give a folder for the sweep")
    if (out / SETTINGS).is_file():
        if (out / SETTINGS).read_text(encoding="utf-8") != settings:
            raise UserError(f"{out} holds a sweep with other settings: give a new --out, or the same settings to "
                            "continue it")
    elif out.is_dir() and any(out.iterdir()):
        raise UserError(f"{out} is not empty and holds no sweep: give a new --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / SETTINGS, settings)


def _run_to(config: DictConfig, folder: Path, seed: int, steps: int, models):
    """The seed's run, at `steps` steps: started, or resumed from its folder (finished: read back)."""
    import copy

    from ..generation import resume, run
    from ..outputs import previous_path

    state = folder / "state.pt"
    if state.is_file() or previous_path(state).is_file():
        return resume(folder, {"steps": steps, "quiet": True}, models=models)
    if folder.exists():  # stopped before its first state: nothing in it to keep
        shutil.rmtree(folder)
    settings = copy.deepcopy(config)
    settings.seed, settings.steps, settings.run_dir, settings.output, settings.quiet = seed, steps, str(folder), None, True
    return run(settings, models=models)


def _write_summary(result: SweepResult, config: DictConfig) -> None:
    from ..outputs import write_jsonl
    from .contact_sheet import write_contact_sheet
    from .runner import JobResult
    from .spec import Job

    title = " | ".join(config.prompts) or "sweep"
    write_jsonl(result.out / SUMMARY, [
        {"rank": rank, "seed": run.seed, "score": run.score, "steps": run.steps, "kept": rank < result.kept,
         "run_dir": run.run_dir.name, "seconds": round(run.seconds, 3)} for rank, run in enumerate(result.runs)])
    # Drawn as a batch's jobs are; where a batch names the preset, a sweep says whether the run was kept.
    shown = [JobResult(Job(rank, {"prompt": title, "seed": run.seed, "steps": run.steps}, swept=("steps",)), "ok", None,
                       run.seconds, run.score, [run.run_dir / "final.png"],
                       {"preset": "kept" if rank < result.kept else "stopped"})
             for rank, run in enumerate(result.runs)]
    write_contact_sheet(result.out / CONTACT_SHEET, shown)


# -- the `sweep` batch kind: a generate job's settings, plus seeds and keep --------------------------
def _split(settings: dict) -> tuple[dict, int, int]:
    rest = dict(settings)
    counts = [rest.pop(key, None) for key in ("seeds", "keep")]
    for key, value in zip(("seeds", "keep"), counts):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f"a sweep job needs {key}: a whole number of 1 or more, not {value!r}")
    if counts[1] >= counts[0]:
        raise UserError(f"keep {counts[1]} must be below seeds {counts[0]}: a sweep keeps fewer runs than it starts")
    return rest, counts[0], counts[1]


def check_sweep_job(settings: dict) -> None:
    from .generate_kind import check_generate

    check_generate(_split(settings)[0])


def resolve_sweep_job(settings: dict) -> dict:
    from .generate_kind import resolve_generate

    rest, seeds, keep = _split(settings)
    return {**resolve_generate(rest), "seeds": seeds, "keep": keep}


def run_sweep_job(settings: dict, folder: Path, cache, device: str | None):
    from ..loading import load_models
    from .generate_kind import config_for_job, generate_config_layers, model_key

    rest, seeds, keep = _split(settings)
    preset, overrides = generate_config_layers(rest)
    config = config_for_job(preset, overrides, folder, device)
    result = sweep(config, folder, seeds, keep, models=cache.get(model_key(config), lambda: load_models(config)))
    best = result.best
    return JobOutput([best.run_dir / "final.png", folder / CONTACT_SHEET], best.score,
                     {"prompt": " | ".join(config.prompts), "preset": preset, "seed": best.seed})


register_kind("sweep", run_sweep_job, check=check_sweep_job, resolve=resolve_sweep_job)
