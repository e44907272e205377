"""Cutouts (random crops for CLIP) and the Kornia augmentation pipelines of augmentations/."""

import pytest
import torch
from torch import nn

from vqclip.cutouts import (
    build_augmentations,
    crop_and_resize,
    make_cutouts,
    pooled_view,
    resample_boxes,
    sample_cutout_boxes,
)
from vqclip.errors import UserError


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def gradient_image(height, width, batch=1):
    """Channel 0 = x, channel 1 = y, channel 2 = image index: every pixel says where it came from."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32),
                            torch.arange(width, dtype=torch.float32), indexing="ij")
    return torch.stack([torch.stack([xs, ys, torch.full_like(xs, b)]) for b in range(batch)])


# --- boxes and crops -------------------------------------------------------------------------------


@pytest.mark.parametrize("height,width,cut_size", [(64, 96, 24), (96, 64, 24), (50, 50, 50), (20, 30, 32)])
@pytest.mark.parametrize("cut_pow", [0.5, 1.0, 3.0])
def test_boxes_respect_size_bounds_and_stay_inside(height, width, cut_size, cut_pow):
    boxes = sample_cutout_boxes(height, width, cut_size, 500, cut_pow, gen())
    assert boxes.shape == (500, 4) and boxes.dtype == torch.long
    x0, y0, w, h = boxes.unbind(1)
    smallest = min(height, width, cut_size)
    assert torch.equal(w, h)
    assert int(w.min()) >= smallest and int(w.max()) <= min(height, width)
    assert int(x0.min()) >= 0 and int(y0.min()) >= 0
    assert bool((x0 + w <= width).all()) and bool((y0 + h <= height).all())


def test_cut_pow_shifts_sizes_and_offsets_cover_the_image():
    small = sample_cutout_boxes(128, 128, 32, 2000, 3.0, gen())[:, 2].float().mean()
    large = sample_cutout_boxes(128, 128, 32, 2000, 0.3, gen())[:, 2].float().mean()
    assert small < 60 < 100 < large  # E[u^3]·96+32 = 56, E[u^0.3]·96+32 ≈ 106
    boxes = sample_cutout_boxes(128, 128, 32, 2000, 1.0, gen())
    assert int(boxes[:, 0].min()) == 0 and int(boxes[:, 2].max()) > 120


def test_whole_image_box_at_same_size_returns_the_image():
    image = torch.rand(2, 3, 40, 40)
    out = crop_and_resize(image, torch.tensor([[0, 0, 40, 40]]), 40)
    torch.testing.assert_close(out, image, rtol=0, atol=1e-6)


def test_known_box_on_a_gradient_image_gives_the_expected_pixels():
    image = gradient_image(32, 48, batch=2)
    out = crop_and_resize(image, torch.tensor([[5, 3, 8, 8], [20, 10, 16, 16]]), 8)
    assert out.shape == (4, 3, 8, 8)
    # Box 0 at its own size is an exact slice; box-major order: box k of image b at k*B + b.
    torch.testing.assert_close(out[0], image[0, :, 3:11, 5:13], rtol=0, atol=1e-5)
    torch.testing.assert_close(out[1], image[1, :, 3:11, 5:13], rtol=0, atol=1e-5)
    assert out[1, 2].eq(1).all() and out[2, 2].eq(0).all()
    # Box 1 is halved: away from the borders the filtered ramp is 20 + 2i + 0.5 (pixel-centre mapping).
    expected = 20 + 2 * torch.arange(8.0) + 0.5
    torch.testing.assert_close(out[2, 0, 4, 1:-1], expected[1:-1], rtol=0, atol=1e-4)
    torch.testing.assert_close(out[2, 1, 1:-1, 4], expected[1:-1] - 10, rtol=0, atol=1e-4)


def test_downscaling_is_antialiased():
    # Stripes of period 4 (one bright column in four) shrunk 4x: an antialiased resize gives the
    # mean 0.25 everywhere; plain bilinear samples between two dark columns and gives 0.
    image = torch.zeros(1, 3, 64, 64)
    image[..., ::4] = 1.0
    out = crop_and_resize(image, torch.tensor([[0, 0, 64, 64]]), 16)
    torch.testing.assert_close(out[..., 2:-2, 2:-2], torch.full_like(out[..., 2:-2, 2:-2], 0.25))
    plain = crop_and_resize(image, torch.tensor([[0, 0, 64, 64]]), 16, antialias=False)
    assert plain.max() < 0.01


def test_boxes_outside_the_image_are_rejected():
    with pytest.raises(ValueError):
        crop_and_resize(torch.rand(1, 3, 16, 16), torch.tensor([[10, 0, 8, 8]]), 8)


# --- make_cutouts --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["classic", "pooled", "mix"])
@pytest.mark.parametrize("cutn", [1, 5])
def test_output_shapes(mode, cutn):
    out = make_cutouts(torch.rand(2, 3, 40, 56), 24, cutn, mode=mode, generator=gen())
    assert out.shape == (cutn * 2, 3, 24, 24)


def test_pooled_cutouts_are_the_pooled_image_and_mix_is_half_each():
    image = torch.rand(1, 3, 48, 48)
    pooled = make_cutouts(image, 16, 4, mode="pooled", noise_fac=0, generator=gen())
    expected = (nn.functional.avg_pool2d(image, 3) + nn.functional.max_pool2d(image, 3)) / 2
    for cutout in pooled:
        torch.testing.assert_close(cutout, expected[0])
    mix = make_cutouts(image, 16, 5, mode="mix", noise_fac=0, generator=gen(3))
    boxes = sample_cutout_boxes(48, 48, 16, 3, 1.0, gen(3))  # the classic half comes first
    torch.testing.assert_close(mix[:3], crop_and_resize(image, boxes, 16))
    torch.testing.assert_close(mix[3:], expected.repeat(2, 1, 1, 1))


def test_gradient_reaches_the_image():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 48, 64, requires_grad=True)
    out = make_cutouts(image, 32, 6, mode="mix", augment=build_augmentations("classic"), generator=gen())
    out.square().mean().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0 and torch.isfinite(image.grad).all()


def test_same_seed_same_cutouts_and_another_seed_differs():
    image = torch.rand(2, 3, 48, 48)
    first = make_cutouts(image, 24, 8, noise_fac=0.1, generator=gen(7))
    second = make_cutouts(image, 24, 8, noise_fac=0.1, generator=gen(7))
    assert torch.equal(first, second)
    assert not torch.equal(first, make_cutouts(image, 24, 8, noise_fac=0.1, generator=gen(8)))


def test_same_seeds_with_augmentations_give_the_same_cutouts():
    image = torch.rand(1, 3, 48, 48)
    augment = build_augmentations("classic")
    runs = []
    for _ in range(2):
        torch.manual_seed(1)  # Kornia draws from the global RNG: the engine seeds torch
        runs.append(make_cutouts(image, 24, 8, augment=augment, generator=gen(7)))
    assert torch.equal(*runs)


def test_noise_fac_zero_adds_no_noise_and_nonzero_does():
    image = torch.rand(1, 3, 48, 48)
    boxes = sample_cutout_boxes(48, 48, 24, 8, 1.0, gen(5))
    clean = crop_and_resize(image, boxes, 24)
    torch.testing.assert_close(make_cutouts(image, 24, 8, noise_fac=0, generator=gen(5)), clean)
    noisy = make_cutouts(image, 24, 8, noise_fac=0.5, generator=gen(5))
    per_cutout = (noisy - clean).flatten(1).std(dim=1)
    assert per_cutout.max() > 0.05 and per_cutout.max() < 0.6  # strength U(0, fac) per cutout
    assert per_cutout.std() > 0.01  # ... and it differs between cutouts


@pytest.mark.parametrize("mode", ["classic", "pooled", "mix"])
def test_image_smaller_than_cut_size(mode):
    image = torch.rand(1, 3, 20, 30, requires_grad=True)
    out = make_cutouts(image, 32, 4, mode=mode, augment=build_augmentations("light"), generator=gen())
    assert out.shape == (4, 3, 32, 32)
    out.sum().backward()
    assert image.grad.abs().sum() > 0
    assert sample_cutout_boxes(20, 30, 32, 50, 1.0, gen())[:, 2].eq(20).all()


def test_unknown_mode_is_a_user_error():
    with pytest.raises(UserError, match="pooled"):
        make_cutouts(torch.rand(1, 3, 32, 32), 16, 2, mode="poled")


def test_pooled_view_of_a_small_image_is_resized():
    assert pooled_view(torch.rand(2, 3, 10, 12), 16).shape == (2, 3, 16, 16)


# --- augmentation pipelines -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["classic", "none", "light", "heavy"])
def test_each_shipped_pipeline_builds_and_runs(name):
    torch.manual_seed(0)
    augment = build_augmentations(name)
    for size in (24, 32):  # one pipeline serves CLIP models of different input sizes
        batch = torch.rand(6, 3, size, size)
        out = augment(batch)
        assert out.shape == batch.shape and torch.isfinite(out).all()
    if name == "none":
        assert len(augment) == 0 and torch.equal(augment(batch), batch)
    else:
        assert len(augment) >= 2


def test_classic_pipeline_has_the_well_known_set():
    names = [type(m).__name__ for m in build_augmentations("classic")]
    assert names == ["RandomHorizontalFlip", "RandomAffine", "RandomPerspective", "ColorJitter", "RandomSharpness"]


def test_unknown_augmentation_class_suggests_a_close_match():
    with pytest.raises(UserError, match="did you mean: RandomHorizontalFlip"):
        build_augmentations([{"RandomHorizontalFlp": {"p": 0.5}}])


def test_bad_argument_names_the_class_and_the_argument():
    with pytest.raises(UserError, match=r"RandomAffine has no argument 'degree'.*degrees"):
        build_augmentations([{"RandomAffine": {"degree": 15}}])
    with pytest.raises(UserError, match="ColorJitter"):
        build_augmentations([{"ColorJitter": {"hue": 5.0}}])  # out of range: Kornia's ValueError
    with pytest.raises(UserError, match="RandomAffine"):
        build_augmentations([{"RandomAffine": {}}])  # `degrees` is required: TypeError


@pytest.mark.parametrize("entry", [["RandomHorizontalFlip"], [{"RandomHorizontalFlip": 0.5}],
                                   [{"RandomHorizontalFlip": {}, "RandomVerticalFlip": {}}]])
def test_malformed_entries_are_user_errors(entry):
    with pytest.raises(UserError, match="entry 1"):
        build_augmentations(entry)


def test_inline_list_spec():
    augment = build_augmentations([{"RandomHorizontalFlip": {"p": 1.0}}, {"RandomVerticalFlip": None}])
    batch = torch.rand(2, 3, 8, 8)
    torch.manual_seed(0)
    out = augment(batch)
    assert out.shape == batch.shape
    assert torch.equal(augment[0](batch), batch.flip(-1))


def test_omegaconf_list_from_a_preset():
    from omegaconf import OmegaConf

    augment = build_augmentations(OmegaConf.create([{"RandomAffine": {"degrees": 10, "translate": [0.1, 0.1]}}]))
    assert type(augment[0]).__name__ == "RandomAffine" and augment(torch.rand(2, 3, 8, 8)).shape == (2, 3, 8, 8)


def test_yaml_file_path_spec(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("# mine\n- RandomGrayscale: {p: 1.0}\n")
    augment = build_augmentations(str(path))
    gray = augment(torch.rand(1, 3, 8, 8))
    assert torch.allclose(gray[:, 0], gray[:, 1])
    assert len(build_augmentations(path)) == 1
    (tmp_path / "broken.yaml").write_text("- [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        build_augmentations(str(tmp_path / "broken.yaml"))
    (tmp_path / "dict.yaml").write_text("RandomGrayscale: {}\n")
    with pytest.raises(UserError, match="list"):
        build_augmentations(str(tmp_path / "dict.yaml"))


def test_names_with_path_parts_are_not_turned_into_paths(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for spec in ["../x", "../classic", "sub/classic", "..", "missing.yaml"]:
        with pytest.raises(UserError, match="does not exist"):
            build_augmentations(spec)
    with pytest.raises(UserError, match="did you mean: classic"):
        build_augmentations("clasic")
    (work / "classic").write_text("- RandomHorizontalFlip: {p: 1.0}\n")  # a bare word stays a name
    assert [type(m).__name__ for m in build_augmentations("classic")][0] == "RandomHorizontalFlip"
    assert len(build_augmentations("classic")) == 5


def test_pipeline_that_changes_the_cutout_size_is_a_user_error():
    augment = build_augmentations([{"Resize": {"size": [16, 16]}}])
    with pytest.raises(UserError, match="size"):
        make_cutouts(torch.rand(1, 3, 48, 48), 24, 2, augment=augment, generator=gen())
    keeps = build_augmentations([{"CenterCrop": None}])  # size left out: keeps the cutout size
    assert make_cutouts(torch.rand(1, 3, 48, 48), 24, 2, augment=keeps, generator=gen()).shape == (2, 3, 24, 24)


# --- the batched path (resample_boxes) against the reference loop (crop_and_resize) -------------------


@pytest.mark.parametrize("height, width, cut_size", [
    (64, 64, 64),     # the shapes world: crops of 64..64
    (256, 256, 224),  # the popular setting: mild downscaling
    (96, 160, 32),    # strong downscaling, where the anti-aliasing filter matters
    (16, 24, 32),     # an image smaller than CLIP's input: upscaling
])
def test_batched_cutouts_equal_the_reference_crops_and_their_gradients(height, width, cut_size):
    image = torch.rand(2, 3, height, width, generator=gen(3), requires_grad=True)
    boxes = sample_cutout_boxes(height, width, cut_size, 12, 1.0, gen(4))
    reference, batched = crop_and_resize(image, boxes, cut_size), resample_boxes(image, boxes, cut_size)
    torch.testing.assert_close(batched, reference, atol=1e-4, rtol=1e-4)
    upstream = torch.randn(reference.shape, generator=gen(5))
    grad_reference, = torch.autograd.grad((reference * upstream).sum(), image)
    grad_batched, = torch.autograd.grad((batched * upstream).sum(), image)
    torch.testing.assert_close(grad_batched, grad_reference, atol=1e-3, rtol=1e-3)


def test_batched_cutouts_are_box_major_like_the_reference():
    image = torch.rand(3, 3, 40, 40, generator=gen(6))
    boxes = torch.tensor([[0, 0, 40, 40], [10, 5, 20, 20]])
    out = resample_boxes(image, boxes, 20).view(2, 3, 3, 20, 20)  # [box, image, C, S, S]
    torch.testing.assert_close(out[1, 2], image[2, :, 5:25, 10:30], atol=1e-6, rtol=0)  # 20 px box at 20 px: a plain crop


def test_batched_cutouts_refuse_boxes_outside_the_image():
    with pytest.raises(ValueError, match="inside"):
        resample_boxes(torch.rand(1, 3, 16, 16), torch.tensor([[10, 0, 8, 8]]), 8)


def test_augmentations_under_bf16_autocast_give_no_nan():
    # Kornia's perspective warp solved its homography in bf16 under autocast: 2 or 3 of these 640
    # cutouts came out NaN, and the run ended with "became nan".
    augment = build_augmentations([{"RandomPerspective": {"distortion_scale": 0.7, "p": 1.0}}])
    torch.manual_seed(0)
    for _ in range(20):
        image = torch.rand(1, 3, 256, 256).to(torch.bfloat16)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            cutouts = make_cutouts(image, 224, 32, augment=augment, noise_fac=0.0, generator=gen())
        assert cutouts.dtype == torch.float32 and torch.isfinite(cutouts).all()
