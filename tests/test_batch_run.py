"""Batches end to end on the shapes world: a 2×2×2 grid, failures, --resume, custom kinds, workers."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

import vqclip
from vqclip.batch import JobOutput, ModelCache, register_kind
from vqclip.batch import kinds as job_kinds
from vqclip.cli import main
from vqclip.outputs import read_jsonl, read_metadata, save_png

GRID = """\
defaults: {preset: shapes, steps: 2, cutn: 4}
grid:
  prompt: ["a red circle on a blue background", "a blue square on a yellow background"]
  seed: [1, 2]
  noise_fac: [0.0, 0.1]
"""


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
    """The 2×2×2 grid through the command line, once for the tests below (one model load)."""
    folder = tmp_path_factory.mktemp("grid")
    (folder / "grid.yaml").write_text(GRID)
    cache = ModelCache()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(job_kinds, "WORKER_CACHE", cache)
        code = main(["batch", str(folder / "grid.yaml"), "--out", str(folder / "out"), "--threads", "1"])
    return folder / "out", code, cache


def test_grid_writes_eight_images_summary_and_contact_sheet(grid_run):
    out, code, cache = grid_run
    assert code == 0
    assert cache.loads == 1  # eight jobs, one VQGAN + CLIP load
    records = read_jsonl(out / "summary.jsonl")
    assert [r["job"] for r in records] == list(range(8)) and {r["status"] for r in records} == {"ok"}
    finals = sorted(out.glob("*/final.png"))
    assert len(finals) == 8 and [out / r["outputs"][0] for r in records] == finals
    assert {(r["prompt"], r["seed"], r["settings"]["noise_fac"]) for r in records} == {
        (p, s, n) for p in ("a red circle on a blue background", "a blue square on a yellow background")
        for s in (1, 2) for n in (0.0, 0.1)}
    for record in records:
        assert record["preset"] == "shapes" and -1 <= record["score"] <= 1 and record["seconds"] > 0
        meta = read_metadata(out / record["outputs"][0])
        assert meta["seed"] == record["seed"] and meta["step"] == 2 and meta["score"] == record["score"]
    # the same seed with a different setting gives a different image; different seeds too
    assert not np.array_equal(pixels(finals[0]), pixels(finals[1]))
    assert not np.array_equal(pixels(finals[0]), pixels(finals[2]))
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.size[0] > sheet.size[1] > 128  # 4 columns × 2 rows of captioned thumbnails
    # each thumbnail is the job's image enlarged: the first tile's centre is the image's centre
    first = np.asarray(sheet.convert("RGB"))[6 + 64, 6 + 64]
    assert np.array_equal(first, pixels(finals[0])[32, 32])


def test_resume_runs_only_what_is_missing(grid_run, tmp_path, capsys):
    out, _, _ = grid_run
    batch = tmp_path / "grid.yaml"
    batch.write_text(GRID)
    stamps = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/final.png")}
    lost = sorted(stamps)[3]
    (out / lost / "final.png").unlink()
    # one job's settings change (its hash changes): it runs again as well
    changed = GRID.replace('prompt: ["a red circle on a blue background"',
                           'prompt: ["a red circle on a green background"')
    batch.write_text(changed)
    code = main(["batch", str(batch), "--out", str(out), "--resume", "--threads", "1"])
    printed = capsys.readouterr().out
    assert code == 0
    ran = [line.split("]")[1].split(":")[0].strip() for line in printed.splitlines()
           if "ok" in line and "finished earlier" not in line and line.startswith("[")]
    redone = {f"{i:03d}-a-red-circle-on-a-green-background" for i in range(4)}
    assert set(ran) == redone  # job 3 was among the changed ones; the square jobs were kept
    for name, stamp in stamps.items():
        if name.startswith(("004", "005", "006", "007")):
            assert (out / name / "final.png").stat().st_mtime_ns == stamp
    records = read_jsonl(out / "summary.jsonl")
    assert len(records) == 8 and all(r["status"] == "ok" for r in records)
    # a second resume has nothing left to do
    assert main(["batch", str(batch), "--out", str(out), "--resume"]) == 0
    assert capsys.readouterr().out.count("finished earlier") == 8


def test_a_failing_job_is_recorded_and_the_batch_goes_on(tmp_path, capsys):
    batch = tmp_path / "b.yaml"
    batch.write_text("defaults: {preset: shapes, steps: 1, cutn: 2}\n"
                     "jobs:\n  - {prompt: a red circle, seed: 1}\n  - {prompt: a blue square, preset: nosuch}\n"
                     "  - {prompt: a green triangle, seed: 2}\n")
    code = main(["batch", str(batch), "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 1 and "1 of 3 jobs failed" in captured.err
    records = read_jsonl(tmp_path / "out" / "summary.jsonl")
    assert [r["status"] for r in records] == ["ok", "failed", "ok"]
    assert records[1]["error"].startswith("unknown preset 'nosuch'") and "\n" not in records[1]["error"]
    assert records[1]["outputs"] == [] and records[1]["preset"] == "nosuch"
    assert (tmp_path / "out" / "002-a-green-triangle" / "final.png").is_file()
    assert (tmp_path / "out" / "contact_sheet.png").is_file()


@pytest.fixture
def custom_kinds():
    """Two kinds added by tests: one paints a flat image, one hits a bug."""
    def paint(settings, folder, cache, device):
        colour = cache.get("palette", lambda: {"red": (255, 0, 0), "blue": (0, 0, 255)})[settings["colour"]]
        save_png(folder / "flat.png", Image.new("RGB", (8, 8), colour), {"colour": settings["colour"]})
        return JobOutput([folder / "flat.png"], caption={"prompt": f"flat {settings['colour']}"})

    def broken(settings, folder, cache, device):
        raise ZeroDivisionError("division by zero\nsecond line")

    register_kind("paint", paint)
    register_kind("broken", broken)
    yield
    del job_kinds.KINDS["paint"], job_kinds.KINDS["broken"]


def test_adding_a_kind_is_one_function_and_a_bug_is_recorded(custom_kinds, tmp_path):
    jobs = [{"kind": "paint", "colour": "red"}, {"kind": "broken"}, {"kind": "paint", "colour": "blue"}]
    results = list(vqclip.batch.run(jobs, tmp_path))
    assert [r.status for r in results] == ["ok", "failed", "ok"]
    assert pixels(results[2].files[0])[0, 0].tolist() == [0, 0, 255]
    assert results[1].error == "ZeroDivisionError: division by zero (see error.txt)"
    assert "Traceback" in (tmp_path / results[1].job.name / "error.txt").read_text()
    assert [r["prompt"] for r in read_jsonl(tmp_path / "summary.jsonl")] == ["flat red", "broken", "flat blue"]


def test_python_api_checks_before_running(tmp_path):
    with pytest.raises(vqclip.errors.UserError, match="not both"):
        vqclip.batch.run([{"prompt": "a"}], tmp_path, workers=2, ray=True)
    with pytest.raises(vqclip.errors.UserError, match="job 0"):
        vqclip.batch.run([{"prompt": "a", "stpes": 1}], tmp_path)


@pytest.mark.slow  # two spawned processes import torch and load the models: about 25 s on 2 cores
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="worker processes need 2 CPU cores to be worth a test")
def test_worker_processes_match_a_local_run(grid_run, tmp_path):
    """Two spawned workers run two of the grid's jobs; the images equal those made in this process."""
    out, _, _ = grid_run
    batch = tmp_path / "grid.yaml"
    # the square's jobs: the resume test leaves them as they were
    batch.write_text(GRID.replace('"a red circle on a blue background", ', "").replace("noise_fac: [0.0, 0.1]",
                                                                                         "noise_fac: [0.0]"))
    spread = sorted(vqclip.batch.run(batch, tmp_path / "workers", workers=2, threads=1, contact_sheet=False),
                    key=lambda r: r.job.index)
    assert [r.status for r in spread] == ["ok", "ok"], [r.error for r in spread]
    local = {(r["prompt"], r["seed"]): r for r in read_jsonl(out / "summary.jsonl")
             if r["settings"]["noise_fac"] == 0.0}
    for result in spread:
        here = local[result.job.settings["prompt"], result.job.settings["seed"]]
        assert np.array_equal(pixels(result.files[0]), pixels(out / here["outputs"][0]))
        assert result.score == pytest.approx(here["score"], abs=1e-6)


def test_video_jobs_run_beside_generate_jobs(tmp_path):
    jobs = {"defaults": {"preset": "shapes-zoom", "seed": 4},
            "jobs": [{"kind": "video", "prompt": "a red circle", "frames": 2, "fps": 4, "format": "gif",
                      "video": {"first_frame_steps": 2, "steps_per_frame": 1}},
                     {"prompt": "a red circle", "preset": "shapes", "steps": 1, "cutn": 2}]}
    results = list(vqclip.batch.run(jobs, tmp_path, threads=1))
    assert [r.status for r in results] == ["ok", "ok"], [r.error for r in results]
    video = results[0]
    assert [p.name for p in video.files] == ["video.gif", "00000.png"] and video.files[0].is_file()
    with Image.open(video.files[0]) as gif:
        assert gif.n_frames == 2 and gif.size == (64, 64)
    record = read_jsonl(tmp_path / "summary.jsonl")[0]
    assert record["kind"] == "video" and record["outputs"][0] == f"{video.job.name}/video.gif"
    assert record["seed"] == 4 and record["preset"] == "shapes-zoom"


@pytest.fixture
def tiny_prior_folder(tmp_path):
    """A tiny random BART prior in vqclip's format: 3×4 tokens from the shapes VQGAN's first 20 codes."""
    import torch

    from vqclip.prior.model import BartPrior, PriorConfig
    from vqclip.prior.tokenizer import PAD, ClipBpeTokenizer, clip_bpe_ids
    from vqclip.prior.weights import save_prior

    torch.manual_seed(0)
    config = PriorConfig(text_vocab=40, text_length=8, image_vocab=24, codebook_size=20, grid=[3, 4], width=32,
                         heads=2, glu=48, encoder_layers=1, decoder_layers=1, pad_token=PAD)
    save_prior(tmp_path / "prior", BartPrior(config).eval(), ClipBpeTokenizer(clip_bpe_ids("a red circle")))
    return tmp_path / "prior"


def test_prior_sample_jobs_share_one_model_load(tiny_prior_folder, tmp_path, monkeypatch):
    cache = ModelCache()
    monkeypatch.setattr(job_kinds, "WORKER_CACHE", cache)
    jobs = {"defaults": {"kind": "prior-sample", "prompt": "a red circle", "preset": "shapes",
                         "prior": str(tiny_prior_folder), "num": 3},
            "grid": {"seed": [1, 2]}}
    results = list(vqclip.batch.run(jobs, tmp_path / "out", threads=1))
    assert [r.status for r in results] == ["ok", "ok"], [r.error for r in results]
    assert cache.loads == 1
    first, second = results
    assert [p.name for p in first.files] == ["sample.png", "sample-0.png", "sample-1.png", "sample-2.png"]
    assert pixels(first.files[0]).shape == (12, 16, 3)  # 3×4 tokens, factor 4
    assert np.array_equal(pixels(first.files[0]), pixels(first.files[1]))  # the best is rank 0
    assert not np.array_equal(pixels(first.files[0]), pixels(second.files[0]))  # another seed
    assert read_metadata(first.files[0])["score"] == first.score
    assert read_jsonl(tmp_path / "out" / "summary.jsonl")[1]["seed"] == 2


def test_ctrl_c_stops_the_batch_and_resume_continues(custom_kinds, tmp_path, capsys):
    def stop_here(settings, folder, cache, device):
        if settings.get("stop"):
            raise KeyboardInterrupt
        save_png(folder / "flat.png", Image.new("RGB", (8, 8), (0, 0, 0)), {})
        return JobOutput([folder / "flat.png"])

    register_kind("stop-here", stop_here)
    try:
        batch = tmp_path / "b.yaml"
        batch.write_text("defaults: {kind: stop-here}\njobs: [{n: 0}, {n: 1, stop: true}, {n: 2}]\n")
        assert main(["batch", str(batch), "--out", str(tmp_path / "out")]) == 130
        err = capsys.readouterr().err
        assert "batch stopped after 1 of 3 jobs" in err and "--resume" in err
        assert [r["job"] for r in read_jsonl(tmp_path / "out" / "summary.jsonl")] == [0]
        batch.write_text("defaults: {kind: stop-here}\njobs: [{n: 0}, {n: 1}, {n: 2}]\n")
        assert main(["batch", str(batch), "--out", str(tmp_path / "out"), "--resume"]) == 0
        printed = capsys.readouterr().out
        assert printed.count("finished earlier") == 1 and printed.count(": ok") == 3
        assert [r["job"] for r in read_jsonl(tmp_path / "out" / "summary.jsonl")] == [0, 1, 2]
    finally:
        del job_kinds.KINDS["stop-here"]


def test_prior_sample_job_draws_what_vqclip_prior_sample_draws(tmp_path, monkeypatch):
    """The same prompt and seed through `vqclip prior sample`'s job function and through a batch job:
    the same images and scores, because both take the prior's recommended settings (prior.json)."""
    from vqclip.config import build_config
    from vqclip.prior.commands import sample_job

    monkeypatch.setattr(job_kinds, "WORKER_CACHE", ModelCache())
    prompt = "a green triangle on a white background"
    config = build_config("shapes", {"quiet": True})
    cli_files = sample_job(prompt, str(tmp_path / "cli" / "sample.png"), config,
                           {"count": 2, "seed": 3, "temperature": None, "top_k": None, "top_p": None,
                            "supercondition": None}, "shapes")
    job = {"kind": "prior-sample", "prompt": prompt, "preset": "shapes", "prior": "shapes", "num": 2, "seed": 3}
    threads = torch.get_num_threads()  # CPU results depend on it: the batch job uses what the CLI job did
    [result] = list(vqclip.batch.run([job], tmp_path / "batch", threads=threads, contact_sheet=False))
    assert result.status == "ok", result.error
    assert [p.name for p in result.files] == [p.name for p in cli_files]
    for ours, theirs in zip(result.files, cli_files):  # pixels, scores and settings: the same bytes
        assert ours.read_bytes() == theirs.read_bytes()
    assert result.score == read_metadata(cli_files[0])["score"] > 0.5  # a triangle that CLIP recognises
    # the shipped prior recommends temperature 0.7, top-k 16, supercondition 2 (vqclip/shapes/weights/prior.json)
    used = read_metadata(result.files[0])["sample"]
    assert (used["temperature"], used["top_k"], used["supercondition"], used["count"], used["seed"]) == (
        0.7, 16, 2.0, 2, 3)
    assert read_metadata(cli_files[0])["sample"] == used


def test_prior_sample_hash_follows_the_priors_recommendation(tiny_prior_folder):
    """What --resume hashes holds the settings the job will sample with: the prior's recommendation,
    under the job's own keys; editing prior.json's recommendation makes a finished job unfinished."""
    import json

    from vqclip.batch.spec import Job
    from vqclip.batch.summary import config_hash

    description = json.loads((tiny_prior_folder / "prior.json").read_text())
    description["sample"] = {"temperature": 0.5, "top_k": 8}
    (tiny_prior_folder / "prior.json").write_text(json.dumps(description))
    settings = {"prompt": "a red circle", "preset": "shapes", "prior": str(tiny_prior_folder), "top_k": 4}
    resolved = job_kinds.KINDS["prior-sample"].resolve(settings)["sample"]
    assert (resolved["temperature"], resolved["top_k"], resolved["top_p"], resolved["supercondition"]) == (
        0.5, 4, 1.0, 4.0)
    job = Job(0, settings, "prior-sample", "jobs[0]")
    before = config_hash(job)
    description["sample"]["temperature"] = 0.9
    (tiny_prior_folder / "prior.json").write_text(json.dumps(description))
    assert config_hash(job) != before


# -- a batch folder holds one batch ------------------------------------------------------------------
def painted(names: list[str]) -> list[dict]:
    """Paint jobs named 000-red, 001-blue, ... (the palette has red and blue; other names paint red)."""
    return [{"kind": "paint", "colour": name if name in ("red", "blue") else "red", "prompt": name} for name in names]


def folder_state(out) -> dict:
    """Every file under OUT with its bytes: what a refused batch must leave as it was."""
    return {path.relative_to(out).as_posix(): path.read_bytes() for path in sorted(out.rglob("*")) if path.is_file()}


def test_a_batch_into_a_folder_with_a_batch_is_refused_in_one_line(custom_kinds, tmp_path, capsys):
    out = tmp_path / "sweep"
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text("jobs: [{kind: paint, colour: red, prompt: red}, {kind: paint, colour: blue, prompt: blue}]\n")
    second.write_text("jobs: [{kind: paint, colour: blue, prompt: blue}]\n")
    assert main(["batch", str(first), "--out", str(out)]) == 0
    before = folder_state(out)
    assert sorted(before) == ["000-red/flat.png", "001-blue/flat.png", "contact_sheet.png", "summary.jsonl"]
    capsys.readouterr()
    for batch in (second, first):  # another batch, or the same one again: both would replace finished jobs
        assert main(["batch", str(batch), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"vqclip: error: {out} holds the results of a batch (summary.jsonl, contact_sheet.png and "
                       "2 job folders): continue it with --resume, write this batch to another --out, or replace "
                       "them with --overwrite")
        assert folder_state(out) == before
    with pytest.raises(vqclip.errors.UserError, match="holds the results of a batch"):  # at the call, not later
        vqclip.batch.run(painted(["blue"]), out)
    assert folder_state(out) == before
    assert main(["batch", str(second), "--out", str(out), "--overwrite"]) == 0  # what the error offers
    assert sorted(folder_state(out)) == ["000-blue/flat.png", "contact_sheet.png", "summary.jsonl"]


def test_an_unfinished_batch_folder_is_refused_too_and_resume_continues_it(custom_kinds, tmp_path):
    out = tmp_path / "sweep"
    (out / "001-blue").mkdir(parents=True)  # a job that was running when the batch was killed
    (out / "001-blue" / "flat.png").write_bytes(b"half")
    (out / "notes.txt").write_text("mine")  # not a batch's: never in the way, never removed
    with pytest.raises(vqclip.errors.UserError, match=r"holds the results of a batch \(1 job folder\)"):
        vqclip.batch.run(painted(["red", "blue"]), out)
    results = list(vqclip.batch.run(painted(["red", "blue"]), out, resume=True))
    assert [(r.job.name, r.status, r.skipped) for r in results] == [("000-red", "ok", False), ("001-blue", "ok", False)]
    assert pixels(out / "001-blue" / "flat.png")[0, 0].tolist() == [0, 0, 255]
    assert (out / "notes.txt").read_text() == "mine"


def test_a_folder_with_unrelated_files_takes_a_batch(custom_kinds, tmp_path):
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "pictures").mkdir()
    assert [r.status for r in vqclip.batch.run(painted(["red"]), out)] == ["ok"]
    assert sorted(folder_state(out)) == ["000-red/flat.png", "contact_sheet.png", "notes.txt", "summary.jsonl"]


def test_resume_with_another_batch_is_refused(custom_kinds, tmp_path, capsys):
    """None of the folder's finished jobs is one of this batch's: --resume would continue nothing and
    replace or orphan them all (the README's two examples in one folder)."""
    out = tmp_path / "sweep"
    list(vqclip.batch.run(painted(["red", "blue", "green"]), out))
    before = folder_state(out)
    batch = tmp_path / "other.yaml"
    batch.write_text("jobs: [{kind: paint, colour: blue, prompt: red}, {kind: paint, colour: red, prompt: blue}]\n")
    assert main(["batch", str(batch), "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"vqclip: error: {out} holds another batch: none of its 3 finished jobs is a job of this one "
                   "with the same settings, so --resume has nothing to continue; write this batch to another "
                   "--out, or replace that one with --overwrite")
    assert folder_state(out) == before


def test_resume_of_an_edited_batch_says_which_folders_it_leaves(custom_kinds, tmp_path, caplog):
    out = tmp_path / "sweep"
    list(vqclip.batch.run(painted(["red", "blue", "green"]), out))
    with caplog.at_level("WARNING", logger="vqclip.batch"):
        results = list(vqclip.batch.run(painted(["red", "white"]), out, resume=True))  # blue, green: dropped
    assert [(r.job.name, r.skipped) for r in results] == [("000-red", True), ("001-white", False)]
    assert [record.getMessage() for record in caplog.records] == [
        f"2 job folders in {out} are not jobs of this batch: left as they are, and not in summary.jsonl "
        "(001-blue, 002-green)"]
    assert [r["name"] for r in read_jsonl(out / "summary.jsonl")] == ["000-red", "001-white"]
    assert (out / "001-blue" / "flat.png").is_file() and (out / "002-green" / "flat.png").is_file()


def test_overwrite_replaces_the_earlier_batch_and_nothing_else(custom_kinds, tmp_path, caplog):
    out = tmp_path / "sweep"
    list(vqclip.batch.run(painted(["red", "blue", "green"]), out))
    (out / "notes.txt").write_text("mine")
    with pytest.raises(vqclip.errors.UserError, match="--resume .* or --overwrite .*, not both"):
        vqclip.batch.run(painted(["blue"]), out, resume=True, overwrite=True)
    with caplog.at_level("WARNING", logger="vqclip.batch"):
        results = list(vqclip.batch.run(painted(["blue"]), out, overwrite=True))
    assert [(r.job.name, r.status, r.skipped) for r in results] == [("000-blue", "ok", False)]
    assert [record.getMessage() for record in caplog.records] == [
        f"--overwrite: removed the earlier batch in {out} (summary.jsonl, contact_sheet.png and 3 job folders)"]
    assert sorted(folder_state(out)) == ["000-blue/flat.png", "contact_sheet.png", "notes.txt", "summary.jsonl"]
    assert pixels(out / "000-blue" / "flat.png")[0, 0].tolist() == [0, 0, 255]
    assert [r["name"] for r in read_jsonl(out / "summary.jsonl")] == ["000-blue"]
    # into a folder without a batch, --overwrite removes nothing and says nothing
    caplog.clear()
    with caplog.at_level("WARNING", logger="vqclip.batch"):
        assert [r.status for r in vqclip.batch.run(painted(["red"]), tmp_path / "new", overwrite=True)] == ["ok"]
    assert caplog.records == []
