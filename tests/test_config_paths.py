"""Every file a run reads is checked before any model loads (issue 28, bug 9): a typo in a path is a
one-line error naming the key at once, not after the seconds that loading the models takes.

The ordering is proven by making model loading fail loudly: the tests replace `load_models` and the
registry's loaders with functions that raise, so a check that came after loading would show up as
that AssertionError instead of the expected one-line error.
"""

from __future__ import annotations

import pytest
import torch

import vqclip
import vqclip.generation
import vqclip.models.registry
from vqclip.batch import parse_batch
from vqclip.cli import main
from vqclip.config import build_config
from vqclip.errors import UserError

ERROR_PREFIX = "vqclip: error: "


def _no_models(*args, **kwargs):
    raise AssertionError("a model was loaded before the paths were checked")


@pytest.fixture
def models_fail(monkeypatch):
    """Loading any model is a loud failure (load_models itself, and what it calls)."""
    for target in ("vqclip.loading.load_models", "vqclip.models.registry.load_vqgan_from_config",
                   "vqclip.models.clip.load_clip_ensemble", "vqclip.prior.weights.load_prior"):
        monkeypatch.setattr(target, _no_models)


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def picture(tmp_path):
    from PIL import Image

    path = tmp_path / "start.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(path)
    return path


def generate_cases(tmp, tiny):
    """(command-line arguments after the prompt, what the one line must say)."""
    return [
        (["--init-image", "missing.png"], "init.image: no such file 'missing.png'"),
        (["--image-prompt", "nowhere.png:0.5"], "image_prompts[0]: no such file 'nowhere.png'"),
        # the prompt parser's rule, never rsplit(':'): the weight comes off, a Windows drive stays
        (["--image-prompt", "C:\\pictures\\x.png:2"], "image_prompts[0]: no such file 'C:\\\\pictures\\\\x.png'"),
        (["--init-image", tmp / "start.png", "--mask", "hole.png"], "mask.image: no such file or folder 'hole.png'"),
        (["init.mode=tokens", "init.tokens=grid.pt"], "init.tokens: no such file 'grid.pt'"),
        (["init.mode=latent", "init.latent=z.pt"], "init.latent: no such file 'z.pt'"),
        (["init.mode=prior", "init.prior=./priors/nowhere"], "init.prior: no such folder './priors/nowhere'"),
        (["init.mode=image"], "init.mode=image needs an image"),
        (["init.mode=prior"], "init.mode=prior and mask.fill=prior need init.prior"),
        ([f"vqgan.checkpoint={tmp / 'gone.ckpt'}"], "vqgan.checkpoint: no such file"),
        ([f"vqgan.config={tmp / 'gone.yaml'}"], "vqgan.config: no such file"),
        ([f"clip.models=[{{name: {tmp / 'gone.json'}}}]"], "clip.models[0].name: no such file"),
        ([f"clip.models=[{{name: {tiny['clip_config']}, pretrained: gone.safetensors}}]"],
         "clip.models[0].pretrained: no such file 'gone.safetensors'"),
        (["augmentations=mine/aug.yaml"], "augmentations: no such file 'mine/aug.yaml'"),
        (["--init-image", tmp], "init.image: " + repr(str(tmp)) + " is a folder"),
    ]


CASE_IDS = ["init.image", "image prompt", "image prompt with a drive", "mask", "init.tokens", "init.latent",
            "init.prior folder", "init.image unset", "init.prior unset", "vqgan.checkpoint", "vqgan.config",
            "clip config", "clip weights", "augmentations", "init.image a folder"]


@pytest.mark.parametrize("index", range(len(CASE_IDS)), ids=CASE_IDS)
def test_a_missing_path_is_one_line_before_any_model_loads(index, tiny_preset, tiny_model_files, tmp_path,
                                                           picture, capsys, monkeypatch, models_fail):
    monkeypatch.chdir(tmp_path)
    args, says = generate_cases(tmp_path, tiny_model_files)[index]
    code, _, err = run_cli(["a red circle", *args, "-p", tiny_preset, "--run-dir", tmp_path / "run"], capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith(ERROR_PREFIX) and says in err, err
    assert not (tmp_path / "run").exists()


def test_the_python_api_checks_before_loading(tiny_preset, tmp_path, picture, models_fail):
    with pytest.raises(UserError, match=r"^init\.image: no such file '.*missing\.png'"):
        vqclip.generate("a red circle", preset=str(tiny_preset), run_dir=str(tmp_path / "run"),
                        init={"mode": "image", "image": str(tmp_path / "missing.png")})
    with pytest.raises(UserError, match=r"^image_prompts\[1\]: no such file"):
        vqclip.generate("a red circle", preset=str(tiny_preset), run_dir=str(tmp_path / "run"),
                        image_prompts=[f"{tmp_path / 'start.png'}:0.5", "other.png"])


def test_load_models_checks_every_model_path_before_loading_any(tiny_preset, tmp_path, monkeypatch):
    """`vqclip models check` and scripts call load_models directly: a missing prior folder is said
    before the VQGAN and CLIP load (it used to come after both)."""
    monkeypatch.setattr(vqclip.models.registry, "load_vqgan_from_config", _no_models)
    config = build_config(str(tiny_preset), {"init": {"mode": "prior", "prior": str(tmp_path / "nowhere")}})
    with pytest.raises(UserError, match="^init.prior: no such folder"):
        vqclip.loading.load_models(config)


def test_names_are_not_paths():
    """Registry names, CLIP architectures and tags, and shipped pipelines are never checked as files."""
    from vqclip.paths import check_paths, named_paths

    for preset in ("shapes", "digits", "default", "dvae", "dalle-mini", "quality"):
        config = build_config(preset)
        assert named_paths(config) == [], preset
        check_paths(config)


def test_a_windows_image_prompt_keeps_its_path_whole(tmp_path, monkeypatch):
    from vqclip.paths import named_paths

    monkeypatch.chdir(tmp_path)
    config = build_config(None, {"image_prompts": ["C:\\x\\a.png:0.5:-1", "frame_0010:2", "b.png"]})
    assert [(named.key, named.path) for named in named_paths(config)] == [
        ("image_prompts[0]", "C:\\x\\a.png"), ("image_prompts[1]", "frame_0010"), ("image_prompts[2]", "b.png")]


def test_a_resumed_run_does_not_need_its_start_files(tiny_preset, tmp_path, picture):
    """A resumed run starts from its state.pt: the init image it began from may be gone."""
    from vqclip.paths import check_paths

    run_dir = tmp_path / "run"
    vqclip.generate("a red circle", preset=str(tiny_preset), steps=2, run_dir=str(run_dir),
                    init={"mode": "image", "image": str(picture)})
    picture.unlink()
    with pytest.raises(UserError, match="init.image: no such file"):
        check_paths(build_config(str(tiny_preset), {"init": {"mode": "image", "image": str(picture)}}))
    assert vqclip.resume(run_dir, {"steps": 3}).steps_done == 3


def test_an_unreadable_file_is_named(tmp_path, picture, monkeypatch):
    import os

    from vqclip.paths import check_paths

    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == str(picture) else
                        real_access(path, mode))
    config = build_config(None, {"init": {"mode": "image", "image": str(picture)}})
    with pytest.raises(UserError, match=r"^init\.image: cannot read '.*start\.png' \(permission denied\)"):
        check_paths(config)


# ---- video -------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, says", [
    (["animate", "a red circle", "--frames", "2", "init.mode=image", "init.image=nowhere.png"],
     "init.image: no such file 'nowhere.png'"),
    (["animate", "a red circle", "--frames", "2", "image_prompts=[nowhere.png]"],
     "image_prompts[0]: no such file 'nowhere.png'"),
    (["interpolate", "a red circle", "blue.png"], "key 2: no such file or folder 'blue.png'"),
    (["interpolate", "clip.mp4"], "input: no such file or folder 'clip.mp4'"),
    (["restyle", "nowhere.mp4", "a blue square"], "input: no such file or folder 'nowhere.mp4'"),
    (["restyle", "nowhere.mp4", "a blue square", "--mask", "hole.png"], "input: no such file or folder"),
], ids=["animate init image", "animate image prompt", "interpolate key", "upconvert input", "restyle input",
        "restyle input before mask"])
def test_video_commands_check_paths_before_loading(args, says, tmp_path, capsys, monkeypatch, models_fail):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["video", *args, "-p", "shapes-zoom", "-o", tmp_path / "v.gif"], capsys)
    assert code == 2 and err.count("\n") == 1 and says in err, err
    assert sorted(tmp_path.iterdir()) == []


# ---- batch -------------------------------------------------------------------------------------


@pytest.mark.parametrize("job, says", [
    ({"prompt": "a", "init_image": "missing.png"}, "init.image: no such file 'missing.png'"),
    ({"prompt": "a", "image_prompt": ["nowhere.png:0.5"]}, "image_prompts[0]: no such file 'nowhere.png'"),
    ({"prompt": "a", "init_image": "start.png", "mask": "hole.png"}, "mask.image: no such file or folder"),
    ({"prompt": "a", "init.mode": "latent", "init.latent": "z.pt"}, "init.latent: no such file 'z.pt'"),
    ({"prompt": "a", "vqgan.config": "taming.yaml", "vqgan.checkpoint": "last.ckpt"}, "vqgan.config: no such file"),
    ({"kind": "video", "command": "interpolate", "keys": ["red.png", "a blue square"]},
     "key 1: no such file or folder 'red.png'"),
    ({"kind": "video", "command": "restyle", "input": "clip.mp4", "prompt": "a"}, "input: no such file or folder"),
    ({"kind": "prior-sample", "prompt": "a", "prior": "priors/nowhere"}, "init.prior: no such folder"),
], ids=["init image", "image prompt", "mask", "latent", "vqgan files", "video key", "restyle input", "prior folder"])
def test_batch_jobs_are_checked_when_the_batch_is_read(job, says, tmp_path, picture, monkeypatch, models_fail):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as error:
        parse_batch({"defaults": {"preset": "shapes"}, "jobs": [{"prompt": "fine"}, job]}, source="b.yaml")
    message = str(error.value)
    assert message.startswith("b.yaml: job 1 (jobs[1]): ") and says in message, message


def test_batch_checks_leave_what_the_preset_gives_to_the_run(tmp_path, monkeypatch):
    """A job's settings are checked without its preset: a prior the preset names is not missing."""
    monkeypatch.chdir(tmp_path)
    jobs = parse_batch({"jobs": [{"kind": "prior-sample", "prompt": "a", "preset": "shapes"},
                                 {"prompt": "a", "preset": "shapes", "init.mode": "image"}]})
    assert len(jobs) == 2


def test_a_batch_with_a_missing_file_exits_2_before_any_job_runs(tmp_path, capsys, monkeypatch, models_fail):
    monkeypatch.chdir(tmp_path)
    batch = tmp_path / "b.yaml"
    batch.write_text("defaults: {preset: shapes}\njobs:\n  - {prompt: a}\n  - {prompt: b, init_image: gone.png}\n")
    code, _, err = run_cli(["batch", batch, "--out", tmp_path / "out"], capsys)
    assert code == 2 and err.count("\n") == 1 and "job 1 (jobs[1]): init.image: no such file 'gone.png'" in err, err
    assert not (tmp_path / "out").exists()


def test_the_start_of_a_run_is_untouched_by_the_check(tiny_preset, tmp_path, picture):
    """A run whose files are all there runs as before (the check reads nothing, writes nothing)."""
    result = vqclip.generate("a red circle", preset=str(tiny_preset), steps=1, run_dir=str(tmp_path / "run"),
                             init={"mode": "image", "image": str(picture)}, image_prompts=[f"{picture}:0.5"])
    assert result.steps_done == 1 and torch.isfinite(result.z).all()


def test_prior_sample_checks_the_vqgan_and_clip_files_before_loading_the_prior(tmp_path, capsys, monkeypatch,
                                                                             models_fail):
    monkeypatch.setattr("vqclip.prior.commands.load_prior", _no_models)
    code, _, err = run_cli(["prior", "sample", "a red circle", "-o", tmp_path / "x.png", "--preset", "shapes",
                            "vqgan.checkpoint=nope.safetensors"], capsys)
    assert code == 2 and err.strip() == f"{ERROR_PREFIX}vqgan.checkpoint: no such file 'nope.safetensors': check the path"
