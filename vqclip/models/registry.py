"""Names → files: the VQGANs, min-dalle files and CLIP weights that VQGAN+CLIP users know by name.

Each VQGAN entry carries the architecture of its real YAML (so benchmarks and tests can build it
with random weights, and a downloaded YAML can be checked against it) and where people get the
files. Public download pages die and mirrors answer with HTML error pages under the right file
name, so every download is checked: no HTML, the expected size within a margin (exact size and
sha256 where known), a pickle/zip magic for checkpoints, a taming `model.target` for configs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError, unknown_choice

HEIBOX = "https://heibox.uni-heidelberg.de/d"
OPENAI_DALL_E = "https://cdn.openai.com/dall-e"
BUNDLED = "bundled:"  # a file shipped inside the vqclip package, under vqclip/<path>


@dataclass(frozen=True)
class RemoteFile:
    filename: str
    url: str
    approx_mb: float | None = None  # published size; a download far below it is a broken mirror
    sha256: str | None = None


# vqgan.format: a taming YAML + checkpoint, DALL-E mini's detoker.pt, or DALL-E's dVAE (decoder.pkl [+ encoder.pkl])
VQGAN_FORMATS = ("taming", "min-dalle", "dvae")


@dataclass(frozen=True)
class VQGANEntry:
    name: str
    model: dict | None  # the `model:` section of the real YAML (architecture only); None for min-dalle
    checkpoint: RemoteFile
    config: RemoteFile | None = None
    format: str = "taming"
    note: str = ""
    encoder: RemoteFile | None = None  # a dVAE's encoder, for image init (the checkpoint is its decoder)


def _ddconfig(ch_mult, attn_resolutions) -> dict:
    return dict(double_z=False, z_channels=256, resolution=256, in_channels=3, out_ch=3, ch=128,
                ch_mult=list(ch_mult), num_res_blocks=2, attn_resolutions=list(attn_resolutions), dropout=0.0)


def _vq(n_embed: int, ch_mult=(1, 1, 2, 2, 4), attn=(16,)) -> dict:
    return {"target": "taming.models.vqgan.VQModel",
            "params": {"embed_dim": 256, "n_embed": n_embed, "ddconfig": _ddconfig(ch_mult, attn)}}


def _net2net(first_stage: dict) -> dict:
    return {"target": "taming.models.cond_transformer.Net2NetTransformer",
            "params": {"first_stage_config": first_stage}}


def _heibox(share: str, path: str, filename: str, approx_mb: float | None = None) -> RemoteFile:
    return RemoteFile(filename, f"{HEIBOX}/{share}/files/?p={path.replace('/', '%2F')}&dl=1", approx_mb)


def _bundled_vqgan(name: str, *, n_embed: int, resolution: int, ch: int, approx_mb: float, note: str) -> VQGANEntry:
    """A small f4 VQGAN shipped under vqclip/<name>/weights/ (the recipes' architecture: 64-dim codes)."""
    ddconfig = dict(double_z=False, z_channels=64, resolution=resolution, in_channels=3, out_ch=3, ch=ch,
                    ch_mult=[1, 2, 2], num_res_blocks=1, attn_resolutions=[], dropout=0.0)
    return VQGANEntry(name, {"target": "taming.models.vqgan.VQModel",
                             "params": {"embed_dim": 64, "n_embed": n_embed, "ddconfig": ddconfig}},
                      RemoteFile("vqgan.safetensors", f"{BUNDLED}{name}/weights/vqgan.safetensors", approx_mb),
                      RemoteFile("vqgan.yaml", f"{BUNDLED}{name}/weights/vqgan.yaml"), note=note)


VQGANS: dict[str, VQGANEntry] = {e.name: e for e in [
    VQGANEntry("imagenet_f16_1024", _vq(1024),
               _heibox("8088892a516d4e3baf92", "/ckpts/last.ckpt", "last.ckpt", 958),
               _heibox("8088892a516d4e3baf92", "/configs/model.yaml", "model.yaml"), note="rFID 7.94"),
    VQGANEntry("imagenet_f16_16384", _vq(16384),
               _heibox("a7530b09fed84f80a887", "/ckpts/last.ckpt", "last.ckpt", 980),
               _heibox("a7530b09fed84f80a887", "/configs/model.yaml", "model.yaml"),
               note="rFID 4.98; the popular default"),
    VQGANEntry("gumbel_f8_8192",
               {"target": "taming.models.vqgan.GumbelVQ",
                "params": {"embed_dim": 256, "n_embed": 8192, "kl_weight": 1e-8,
                           "ddconfig": _ddconfig((1, 1, 2, 4), (32,))}},
               _heibox("2e5662443a6b4307b470", "/ckpts/last.ckpt", "last.ckpt", 376),
               _heibox("2e5662443a6b4307b470", "/configs/model.yaml", "model.yaml"),
               note="OpenImages, Gumbel quantisation, rFID 1.49"),
    VQGANEntry("wikiart_f16_16384", _vq(16384),
               RemoteFile("wikiart_f16_16384_8145600.ckpt",
                          "http://eaidata.bmk.sh/data/Wikiart_16384/wikiart_f16_16384_8145600.ckpt", 1000),
               RemoteFile("wikiart_f16_16384_8145600.yaml",
                          "http://eaidata.bmk.sh/data/Wikiart_16384/wikiart_f16_16384_8145600.yaml"),
               note="community-trained on WikiArt"),
    VQGANEntry("sflckr", _net2net(_vq(1024)),
               _heibox("73487ab6e5314cb5adba", "/checkpoints/last.ckpt", "last.ckpt", 4000),
               _heibox("73487ab6e5314cb5adba", "/configs/2020-11-09T13-31-51-project.yaml", "project.yaml"),
               note="S-FLCKR landscapes (Net2Net first stage)"),
    VQGANEntry("coco", _net2net(_vq(8192)),
               RemoteFile("coco.ckpt", "https://dl.nmkd.de/ai/clip/coco/coco.ckpt", 8400),
               RemoteFile("coco.yaml", "https://dl.nmkd.de/ai/clip/coco/coco.yaml"),
               note="COCO-Stuff (Net2Net first stage), community mirror"),
    VQGANEntry("faceshq", _net2net(_vq(1024)),
               RemoteFile("last.ckpt", "https://app.koofr.net/content/links/a04deec9-0c59-4673-8b37-3d696fe63a5d"
                          "/files/get/last.ckpt?path=%2F2020-11-13T21-41-45_faceshq_transformer%2Fcheckpoints"
                          "%2Flast.ckpt", 3800),
               RemoteFile("faceshq.yaml",
                          "https://drive.google.com/uc?export=download&id=1fHwGx_hnBtC8nsq7hesJvs-Klv-P0gzT"),
               note="FacesHQ (Net2Net first stage), community mirrors"),
    _bundled_vqgan("shapes", n_embed=512, resolution=64, ch=64, approx_mb=7.9,
                   note="the embedded shapes world (shipped; `vqclip train vqgan shapes`)"),
    _bundled_vqgan("digits", n_embed=128, resolution=32, ch=32, approx_mb=2.1,
                   note="the shipped digits world (`vqclip train all` on `vqclip data digits`)"),
    VQGANEntry("min-dalle", None,
               RemoteFile("detoker.pt", "https://huggingface.co/kuprel/min-dalle/resolve/main/detoker.pt", 187),
               format="min-dalle", note="DALL-E mini's decoder-only f16/16384 VQGAN"),
    # Sizes unpublished: about 175 and 215 MB if stored in fp32 (43.8 M and 53.8 M parameters).
    VQGANEntry("dalle_dvae", None, RemoteFile("decoder.pkl", f"{OPENAI_DALL_E}/decoder.pkl"), format="dvae",
               encoder=RemoteFile("encoder.pkl", f"{OPENAI_DALL_E}/encoder.pkl"),
               note="OpenAI's DALL-E discrete VAE (f8, 8192 codes)"),
]}

MIN_DALLE_URL = "https://huggingface.co/kuprel/min-dalle/resolve/main"

# The BART prior's files (see vqclip.prior): name -> the files that make it.
PRIORS: dict[str, list[RemoteFile]] = {
    "min-dalle-mini": [RemoteFile(f, f"{MIN_DALLE_URL}/{f}", mb) for f, mb in (
        ("encoder_mini.pt", None), ("decoder_mini.pt", 471), ("vocab_mini.json", None), ("merges_mini.txt", None))],
    "min-dalle-mega": [RemoteFile(f, f"{MIN_DALLE_URL}/{f}", mb) for f, mb in (
        ("encoder.pt", None), ("decoder.pt", None), ("vocab.json", None), ("merges.txt", None))],
    "shapes": [RemoteFile("prior.json", BUNDLED + "shapes/weights/prior.json"),
               RemoteFile("prior.safetensors", BUNDLED + "shapes/weights/prior.safetensors", 2)],
    "digits": [RemoteFile("prior.json", BUNDLED + "digits/weights/prior.json"),
               RemoteFile("prior.safetensors", BUNDLED + "digits/weights/prior.safetensors", 1.8)],
}

# Common open_clip weights (architecture, tag). open_clip fetches these itself; `openai` weights
# need QuickGELU, which vqclip.models.clip switches on.
CLIP_PRETRAINED: dict[str, tuple[str, ...]] = {
    "ViT-B-32": ("openai", "laion2b_s34b_b79k", "laion400m_e32"),
    "ViT-B-16": ("openai", "laion2b_s34b_b88k", "laion400m_e32"),
    "ViT-L-14": ("openai", "laion2b_s32b_b82k"),
    "ViT-L-14-336": ("openai",),
    "RN50": ("openai", "yfcc15m"),
    "RN101": ("openai",),
    "RN50x4": ("openai",),
    "ViT-H-14": ("laion2b_s32b_b79k",),
}


# CLIP models shipped inside the package: name -> (model-config JSON, weights).
BUNDLED_CLIPS: dict[str, tuple[RemoteFile, RemoteFile]] = {
    "shapes": (RemoteFile("clip.json", BUNDLED + "shapes/weights/clip.json"),
               RemoteFile("clip.safetensors", BUNDLED + "shapes/weights/clip.safetensors", 9)),
    "digits": (RemoteFile("clip.json", BUNDLED + "digits/weights/clip.json"),
               RemoteFile("clip.safetensors", BUNDLED + "digits/weights/clip.safetensors", 5.9)),
}


def resolve_clip(spec: dict) -> dict:
    """A `clip.models` entry with a bundled name (`{name: shapes}`) turned into its two files."""
    if spec.get("name") not in BUNDLED_CLIPS or spec.get("pretrained") not in (None, spec["name"]):
        return spec
    config, weights = BUNDLED_CLIPS[spec["name"]]
    return {**spec, "name": str(bundled_path(config)), "pretrained": str(bundled_path(weights))}


def get_vqgan(name: str) -> VQGANEntry:
    if name not in VQGANS:
        raise unknown_choice("VQGAN", name, VQGANS)
    return VQGANS[name]


def model_names() -> list[str]:
    """Every name `vqclip models download` accepts."""
    clip = [f"{arch}:{tag}" for arch, tags in CLIP_PRETRAINED.items() for tag in tags]
    return [*VQGANS, *PRIORS, *clip]


def model_dir(name: str, cache: Path | None = None) -> Path:
    from .download import cache_dir

    return (cache or cache_dir()) / name


def bundled_path(file: RemoteFile) -> Path:
    path = Path(__file__).resolve().parents[1] / file.url[len(BUNDLED):]
    if not path.is_file():
        raise UserError(f"{path} is missing from this vqclip installation: reinstall vqclip")
    return path


def fetch(file: RemoteFile, folder: Path, *, progress: bool = True) -> Path:
    """Download `file` into `folder` (once; later calls find it there) and check what arrived."""
    from .download import DownloadError, download

    if file.url.startswith(BUNDLED):
        return bundled_path(file)
    path = download(file.url, folder / file.filename, sha256=file.sha256, progress=progress)
    problem = _looks_wrong(path, file)
    if problem:
        path.unlink(missing_ok=True)
        raise DownloadError(f"{file.url} gave {problem}; the mirror may be dead: get {file.filename} "
                            "by hand and point vqclip at it")
    return path


def _looks_wrong(path: Path, file: RemoteFile) -> str | None:
    size = path.stat().st_size
    if file.approx_mb and size < 0.5 * file.approx_mb * 1e6:
        return f"only {size / 1e6:.1f} MB where about {file.approx_mb:.0f} MB were expected"
    with path.open("rb") as f:
        head = f.read(4)
    if path.suffix in (".ckpt", ".pt", ".pth", ".pkl") and not (head.startswith(b"PK") or head[:1] == b"\x80"):
        return "a file that is not a PyTorch checkpoint"
    return None


def fetch_vqgan(name: str, *, cache: Path | None = None, progress: bool = True) -> tuple[Path | None, Path]:
    """(config, checkpoint) paths of a registry VQGAN in the cache, downloaded if missing."""
    entry = get_vqgan(name)
    folder = model_dir(name, cache)
    config = fetch(entry.config, folder, progress=progress) if entry.config else None
    if config is not None:
        from .vqgan import read_taming_config

        try:
            read_taming_config(config)
        except UserError as exc:
            config.unlink(missing_ok=True)
            raise UserError(f"the config downloaded for {name} is not usable ({exc}); the mirror may be dead") from None
    return config, fetch(entry.checkpoint, folder, progress=progress)


def fetch_encoder(name: str, *, cache: Path | None = None, progress: bool = True) -> Path | None:
    """A registry dVAE's encoder file in the cache, downloaded if missing; None for other models."""
    entry = get_vqgan(name)
    return fetch(entry.encoder, model_dir(name, cache), progress=progress) if entry.encoder else None


def fetch_prior(name: str, *, cache: Path | None = None, progress: bool = True) -> Path:
    """The folder holding a prior's files, downloaded if missing."""
    if name not in PRIORS:
        raise unknown_choice("prior", name, PRIORS)
    folder = model_dir(name, cache)
    paths = [fetch(file, folder, progress=progress) for file in PRIORS[name]]
    return paths[0].parent  # the cache folder, or the package's own for a bundled prior


def fetch_clip(name: str, pretrained: str) -> Path:
    """open_clip's own cached download of (name, pretrained); verified by open_clip's checksums."""
    import open_clip

    try:
        path = open_clip.download_pretrained(open_clip.get_pretrained_cfg(name, pretrained))
    except Exception as exc:  # network errors come in many types, from urllib and huggingface_hub
        raise UserError(f"cannot download CLIP {name} ({pretrained}): {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; "
                        "download the weights by hand and pass the file as `pretrained`") from None
    if not path:
        raise unknown_choice(f"pretrained tag for {name}", pretrained, open_clip.list_pretrained_tags_by_model(name))
    return Path(path)


def download_by_name(name: str, *, cache: Path | None = None, progress: bool = True) -> list[Path]:
    """`vqclip models download NAME`: a VQGAN, a prior, or `ARCH:TAG` for CLIP weights."""
    if name in VQGANS:
        paths = [*fetch_vqgan(name, cache=cache, progress=progress), fetch_encoder(name, cache=cache, progress=progress)]
        return [p for p in paths if p is not None]
    if name in PRIORS:
        return [fetch_prior(name, cache=cache, progress=progress)]
    arch, _, tag = name.partition(":")
    if tag and arch in CLIP_PRETRAINED:
        return [fetch_clip(arch, tag)]
    raise unknown_choice("model", name, model_names())


def load_vqgan_from_config(vqgan: dict, device="cpu", *, progress: bool = True):
    """The decoder a config's `vqgan:` section names: `name`, or `config` + `checkpoint` (a dVAE:
    `checkpoint` + optional `encoder`), with `format`."""
    from .dvae import load_dvae
    from .vqgan import load_min_dalle_detokenizer, load_vqgan

    name, config, checkpoint = vqgan.get("name"), vqgan.get("config"), vqgan.get("checkpoint")
    fmt = vqgan.get("format") or "taming"
    if fmt not in VQGAN_FORMATS:
        raise unknown_choice("vqgan.format", fmt, VQGAN_FORMATS)
    if vqgan.get("encoder") and fmt != "dvae":
        raise UserError("vqgan.encoder is for vqgan.format=dvae (DALL-E's encoder.pkl); a taming VQGAN's "
                        "encoder is in its checkpoint")
    if checkpoint:  # explicit files win over a name
        if fmt == "dvae":
            return load_dvae(checkpoint, vqgan.get("encoder"), device)
        if fmt == "min-dalle":
            return load_min_dalle_detokenizer(checkpoint, device)
        if not config:
            raise UserError("vqgan.checkpoint needs vqgan.config (the taming YAML beside it)")
        return load_vqgan(config, checkpoint, device)
    if config:
        raise UserError("vqgan.config needs vqgan.checkpoint (the weights that go with it)")
    if not name:
        raise UserError("no VQGAN chosen: set vqgan.name, or vqgan.config and vqgan.checkpoint")
    entry = get_vqgan(name)
    config, checkpoint = fetch_vqgan(name, progress=progress)
    if entry.format == "dvae":  # the user's own encoder file, if given, beside the named decoder
        return load_dvae(checkpoint, vqgan.get("encoder") or fetch_encoder(name, progress=progress), device)
    if entry.format == "min-dalle":
        return load_min_dalle_detokenizer(checkpoint, device)
    return load_vqgan(config, checkpoint, device)
