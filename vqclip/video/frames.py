"""Reading and writing frames: mp4 (H.264, yuv420p, exact fps), GIF, and folders of PNG frames.

Writers never leave half a video: an mp4 or GIF is written to a temporary sibling and renamed
into place; a frame folder is filled under a temporary name and renamed. The settings go beside
the output as `<output>.json` (and into the mp4's `comment` tag, which ffmpeg shows).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ..atomic import permissions_for
from ..errors import UserError
from ..outputs import MAX_IMAGE_PIXELS, load_image, save_png, write_json

VIDEO_SUFFIXES = (".mp4", ".gif")  # what vqclip writes; a path without a suffix is a PNG frame folder
READ_SUFFIXES = (".mp4", ".gif", ".webm", ".mov", ".mkv", ".avi", ".m4v", ".mpg", ".mpeg")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
MAX_FRAMES = 100_000  # reading stops absurd inputs before they fill the memory


def output_kind(path: str | os.PathLike) -> str:
    """'mp4', 'gif' or 'folder' for an output path; any other extension is a UserError."""
    path = Path(path)
    suffix = path.suffix.lower()
    if str(path).endswith(("/", os.sep)) or not suffix:
        if path.is_file():
            raise UserError(f"-o {path}: a file by that name exists; a frame folder needs a new or existing folder")
        return "folder"
    if suffix in VIDEO_SUFFIXES:
        if path.is_dir():
            raise UserError(f"-o {path} is a folder: give a file name such as {path / 'video.mp4'}")
        return suffix[1:]
    raise UserError(f"-o {path}: unknown video extension {suffix!r}; supported: .mp4 (H.264), .gif, "
                    "or a path without an extension for a folder of PNG frames")


def settings_path(path: str | os.PathLike) -> Path:
    """Where the settings of a written video go: beside it, `<name>.json`."""
    path = Path(path)
    return path.with_name(path.name.rstrip("/") + ".json") if path.suffix else path / "settings.json"


def to_uint8(frame: torch.Tensor) -> np.ndarray:
    """3×H×W in [0, 1] -> H×W×3 uint8 (rounded, as vqclip's PNGs are)."""
    return (frame.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def write_video(path: str | os.PathLike, frames: list[torch.Tensor] | torch.Tensor, fps: float,
                settings: dict) -> Path:
    """Write frames (each 3×H×W in [0, 1]) to path (.mp4, .gif or a folder); returns the path."""
    path = Path(path)
    kind = output_kind(path)
    if len(frames) == 0:
        raise UserError("no frames to write")
    if not 0 < fps < float("inf"):
        raise UserError(f"fps must be a positive number, not {fps}")
    described = {**settings, "fps": fps, "frames": len(frames)}
    if kind == "folder":
        _write_folder(path, frames, described)
    else:
        with _temporary_sibling(path) as tmp:
            (_write_mp4 if kind == "mp4" else _write_gif)(tmp, frames, fps, described)
        write_json(settings_path(path), described)
    return path


@contextlib.contextmanager
def _temporary_sibling(path: Path) -> Iterator[Path]:
    """A temporary name beside `path` with the same suffix (writers pick the format from it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, permissions_for(path))  # mkstemp makes 0600 files; keep what a plain open() would give
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _write_mp4(path: Path, frames, fps: float, settings: dict) -> None:
    import imageio.v2 as imageio

    comment = json.dumps(settings, separators=(",", ":"), ensure_ascii=True, default=str)
    writer = imageio.get_writer(path, format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                pixelformat="yuv420p", quality=8, macro_block_size=2,
                                output_params=["-metadata", f"comment={comment}"])
    try:
        for frame in frames:
            writer.append_data(to_uint8(frame))
    finally:
        writer.close()


def _write_gif(path: Path, frames, fps: float, settings: dict) -> None:
    from PIL import Image

    pictures = [Image.fromarray(to_uint8(frame)) for frame in frames]
    # GIF counts in hundredths of a second: the nearest it can hold.
    duration = max(10, round(100 / fps) * 10)
    pictures[0].save(path, format="GIF", save_all=True, append_images=pictures[1:], duration=duration,
                     loop=0, comment=json.dumps(settings, separators=(",", ":"), default=str)[:60000])


def _write_folder(path: Path, frames, settings: dict) -> None:
    """PNG frames 00000.png ... filled under a temporary name, then renamed into place."""
    path = Path(str(path).rstrip("/\\"))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        for index, frame in enumerate(frames):
            save_png(tmp / f"{index:05d}.png", frame, {**settings, "frame": index})
        write_json(tmp / "settings.json", settings)
        os.chmod(tmp, _folder_mode())  # mkdtemp makes 0700 folders; keep what a plain mkdir would give
        if path.exists():  # replace an earlier folder only once the new one is complete
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _folder_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


# ---------------------------------------------------------------------------- reading


def is_video_input(path: str | os.PathLike) -> bool:
    """A folder of frames or a file with a video extension (what up-conversion and restyle read)."""
    path = Path(path)
    return path.is_dir() or (path.is_file() and path.suffix.lower() in READ_SUFFIXES)


def read_frames(path: str | os.PathLike) -> tuple[list[torch.Tensor], float | None]:
    """Frames (each 3×H×W in [0, 1]) and the fps (None when unknown) of a video or frame folder."""
    path = Path(path)
    if path.is_dir():
        return _read_folder(path)
    if not path.is_file():
        raise UserError(f"no video at {path}: give a video file or a folder of frames")
    import imageio.v2 as imageio

    frames = []
    try:
        reader = imageio.get_reader(path)
        try:
            meta = reader.get_meta_data()
            for frame in reader:
                frames.append(_frame_tensor(np.asarray(frame), path))
                if len(frames) > MAX_FRAMES:
                    raise UserError(f"{path} has more than {MAX_FRAMES} frames")
        finally:
            reader.close()
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 (imageio and ffmpeg raise many kinds on a broken file)
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"cannot read video {path}: {reason}") from None
    if not frames:
        raise UserError(f"cannot read video {path}: it holds no frames")
    return frames, _fps(meta)


def _frame_tensor(array: np.ndarray, path: Path) -> torch.Tensor:
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.shape[0] * array.shape[1] > MAX_IMAGE_PIXELS:
        raise UserError(f"{path}: frames of {array.shape[1]}×{array.shape[0]} are too large")
    rgb = array[..., :3].astype(np.float32) / 255
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)


def _fps(meta: dict) -> float | None:
    if meta.get("fps"):
        return float(meta["fps"])
    if meta.get("duration"):  # GIF: milliseconds per frame
        return 1000.0 / float(meta["duration"])
    return None


def _read_folder(path: Path) -> tuple[list[torch.Tensor], float | None]:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise UserError(f"cannot read frames from {path}: it holds no images ({', '.join(IMAGE_SUFFIXES)})")
    if len(files) > MAX_FRAMES:
        raise UserError(f"{path} has more than {MAX_FRAMES} frames")
    frames = [load_image(file, what="frame")[0] for file in files]
    sizes = {tuple(frame.shape[-2:]) for frame in frames}
    if len(sizes) > 1:
        raise UserError(f"the frames in {path} differ in size ({', '.join(f'{w}×{h}' for h, w in sorted(sizes))})")
    fps = None
    settings = settings_path(path)
    if settings.is_file():
        with contextlib.suppress(ValueError, OSError, TypeError):
            fps = float(json.loads(settings.read_text(encoding="utf-8")).get("fps"))
    return frames, fps


def read_settings(path: str | os.PathLike) -> dict:
    """The settings a vqclip video carries: the JSON beside it, else the mp4's comment tag."""
    path = Path(path)
    beside = settings_path(path)
    if beside.is_file():
        return json.loads(beside.read_text(encoding="utf-8"))
    if path.suffix.lower() == ".mp4":
        import imageio_ffmpeg

        # ffmpeg's ffmetadata dump holds the whole tag (its console listing cuts long values).
        probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "ffmetadata",
                                "-"], capture_output=True, text=True, errors="replace", check=False)
        match = re.search(r"^comment=(.*)$", probe.stdout, re.MULTILINE)
        if match:
            return json.loads(re.sub(r"\\(.)", r"\1", match.group(1)))
    raise UserError(f"{path} carries no vqclip settings")
