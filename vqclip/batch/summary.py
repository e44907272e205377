"""summary.jsonl: one line per job, and what `--resume` counts as finished.

While a batch runs, each finished job's line is appended (a killed batch keeps what it did);
at the end the file is rewritten with exactly one line per job, in job order. A job is finished
when its summary line says "ok", the config hash recorded there is the job's hash now, and the
final output it names exists.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import UserError
from ..outputs import append_jsonl, read_jsonl, write_jsonl
from .spec import Job

SUMMARY_NAME = "summary.jsonl"


def config_hash(job: Job) -> str:
    """A hash of everything that decides the job's result: kind and resolved settings.

    For a generate job that is the config merged from defaults, preset and the job's keys (so an
    edited preset changes it). A job whose settings cannot be resolved (an unknown preset) is
    hashed as written; it fails when run, and a failed job is never finished.
    """
    from .kinds import KINDS

    try:
        resolved = KINDS[job.kind].resolve(job.settings)
    except UserError:
        resolved = {"unresolved": job.settings}
    text = json.dumps({"kind": job.kind, "settings": resolved}, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def read_summary(out: Path) -> dict[str, dict]:
    """The latest line for each job name in out/summary.jsonl ({} if there is none)."""
    path = out / SUMMARY_NAME
    if not path.is_file():
        return {}
    latest = {}
    for record in read_jsonl(path):
        if isinstance(record.get("name"), str):
            latest[record["name"]] = record
    return latest


def is_finished(record: dict | None, job: Job, job_hash: str, out: Path) -> bool:
    if not record or record.get("status") != "ok" or record.get("config_hash") != job_hash:
        return False
    outputs = record.get("outputs") or []
    return bool(outputs) and (out / outputs[0]).is_file()


def append_record(out: Path, record: dict) -> None:
    append_jsonl(out / SUMMARY_NAME, record)


def write_summary(out: Path, records: list[dict]) -> Path:
    path = out / SUMMARY_NAME
    write_jsonl(path, records)
    return path
