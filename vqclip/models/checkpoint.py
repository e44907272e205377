"""Reading weight files without ever running code hidden in them.

A checkpoint is untrusted input: a pickle can call any function while it is read. So every
pickle is read by torch's weights-only unpickler, which builds tensors and plain containers and
refuses everything else. Real checkpoints in the wild (taming's Lightning `.ckpt` files) also
name harmless classes, such as Lightning's `ModelCheckpoint` used as a dictionary key. Those
names are replaced by inert placeholder classes that hold whatever state the pickle gives them
and do nothing; a pickle that tries to *call* one (the way a malicious file runs `os.system`)
is refused with a clear error. Lightning is never imported.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Collection
from pathlib import Path

import torch

from ..errors import UserError, first_line

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
SAFETENSORS_SUFFIXES = (".safetensors",)


class UnsafeCheckpointError(UserError):
    """The file tried to run code while being read; it was refused and nothing ran."""


def _placeholder(qualified_name: str, calls: list[str]) -> type:
    """An inert stand-in for the class or function `qualified_name` named by a pickle.

    It may be referenced (a dictionary key), instantiated without a call (pickle's NEWOBJ,
    `cls.__new__`) and given state (BUILD), none of which runs foreign code. Calling it, which is
    what a pickle does to run a function, is recorded in `calls` and refused.
    """

    class Refuse(type):
        def __call__(cls, *args, **kwargs):
            calls.append(qualified_name)
            raise UnsafeCheckpointError(f"the file would call {qualified_name}()")

    module, _, name = qualified_name.rpartition(".")
    return Refuse(name, (), {"__module__": module, "__qualname__": name, "__setstate__": _keep_state})


def _keep_state(self, state) -> None:
    self.__dict__["state"] = state


def _torch_load(path: Path, allowed: Collection[str] | None = None, what: str = "a weight file") -> object:
    """torch.load with weights_only=True, standing in placeholders for foreign globals.

    `allowed`: the only foreign names the file may hold (a whole pickled module names its
    classes); any other is refused before anything is read. None: any name may stand in.
    """
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except (ValueError, RuntimeError, OSError, zipfile.BadZipFile):
        unsafe = []  # legacy (pre-zip) format or a damaged file: the weights-only load below decides
    if allowed is not None:
        foreign = [name for name in unsafe if name not in allowed]
        if foreign:
            raise UnsafeCheckpointError(f"refusing to load {path}: it names {foreign[0]}, which {what} never "
                                        "holds; nothing in it was executed")
        unsafe = list(allowed)  # the legacy format is not scanned beforehand: the allowed names stand in
    calls: list[str] = []
    stand_ins = [(_placeholder(name, calls), name) for name in unsafe]
    try:
        with torch.serialization.safe_globals(stand_ins):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch wraps what the unpickler raised, so look at what was recorded
        blocked = calls or re.findall(r"GLOBAL (\S+)", str(exc))  # torch blocks os, sys, ... outright
        if blocked:
            raise UnsafeCheckpointError(
                f"refusing to load {path}: it would call {blocked[0]} while being read; a weight "
                "file must hold only tensors, and nothing was executed"
            ) from None
        raise UserError(f"cannot read checkpoint {path}: {_first_sentence(exc)} (is the file complete?)") from None


def _first_sentence(exc: Exception) -> str:
    first = first_line(exc).split(". ")[0]  # torch's messages run on for paragraphs
    return f"{type(exc).__name__}: {first[:200]}"


def state_dict_mismatch(expected: dict, state: dict, shown: int = 3) -> str | None:
    """How `state` fails to fit a model whose state dict is `expected` (strict keys and shapes),
    as a short list naming a few keys of each kind; None when it fits."""
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    wrong_shape = [f"{key} {tuple(state[key].shape)} vs {tuple(value.shape)}" for key, value in expected.items()
                   if key in state and state[key].shape != value.shape]
    parts = [f"{label} {len(keys)} ({', '.join(keys[:shown])}{', ...' if len(keys) > shown else ''})"
             for label, keys in (("missing", missing), ("unexpected", unexpected),
                                 ("wrong shape (file vs model)", wrong_shape)) if keys]
    return "; ".join(parts) or None


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], checkpoint: str, config: str) -> None:
    """Strict key matching, reported as a short readable list that names the likely cause."""
    mismatch = state_dict_mismatch(model.state_dict(), state)
    if mismatch:
        raise UserError(f"checkpoint {checkpoint} does not belong to {config}: {mismatch}")


def load_file(path: str | Path) -> object:
    """The object stored in a weight file (.pt/.pth/.bin/.ckpt pickles or .safetensors), on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weight file not found: {path}")
    if path.suffix in SAFETENSORS_SUFFIXES:
        from safetensors import SafetensorError
        from safetensors.torch import load_file as load_safetensors

        try:
            return load_safetensors(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise UserError(f"cannot read safetensors file {path}: {_first_sentence(exc)}") from None
    return _torch_load(path)


def load_state_dict(path: str | Path, *, key: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint as a flat {name: tensor} dict.

    Lightning checkpoints keep the model under "state_dict", others under "model" or "module";
    a plain state dict is returned as it is. `key` picks a sub-dictionary explicitly.
    """
    obj = load_file(path)
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            raise UserError(f"{path} has no {key!r} entry")
        obj = obj[key]
    elif isinstance(obj, dict) and not _is_tensor_dict(obj):
        for wrapper in ("state_dict", "model", "module"):
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict) or not _is_tensor_dict(obj):
        raise UserError(f"{path} holds no state dict (a dictionary of tensors)")
    return {name: value for name, value in obj.items() if isinstance(value, torch.Tensor)}


def _is_tensor_dict(obj: dict) -> bool:
    return bool(obj) and all(isinstance(k, str) for k in obj) and any(
        isinstance(v, torch.Tensor) for v in obj.values()
    )


# -- whole pickled modules (`torch.save(model)`) ----------------------------------------------------
def load_pickled_module(path: str | Path, allowed: Collection[str], what: str) -> object:
    """The inert record of a module saved whole, reading nothing but the classes in `allowed`.

    Each module in the file becomes a placeholder instance (vqclip.models.checkpoint._placeholder)
    holding the attributes the pickle gave it; nothing of the module's own code is imported or
    run. Read its weights with `module_tensors` and its settings with `module_attributes`.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    if zipfile.is_zipfile(path):
        return _torch_load(path, allowed, what)
    return _legacy_module_load(path, allowed, what)


def _legacy_module_load(path: Path, allowed: Collection[str], what: str) -> object:
    """A module pickled in torch's legacy (pre-zip) format, which torch's weights-only loader
    cannot read (it stores each module's class as a persistent id). torch's legacy reader runs
    with a pickle module whose only findable names are the tensor rebuild functions, plain
    containers and inert stand-ins for `allowed`: any other name stops the read before it is used."""
    import collections
    import pickle
    import types
    import warnings

    calls: list[str] = []
    findable = {"collections.OrderedDict": collections.OrderedDict, "builtins.set": set, "__builtin__.set": set,
                "torch.device": torch.device,
                "torch._utils._rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
                "torch._utils._rebuild_parameter": torch._utils._rebuild_parameter,
                **{name: _placeholder(name, calls) for name in allowed}}

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            if f"{module}.{name}" not in findable:
                raise UnsafeCheckpointError(f"refusing to load {path}: it names {module}.{name}, which {what} "
                                            "never holds; nothing in it was executed")
            return findable[f"{module}.{name}"]

    restricted = types.ModuleType("vqclip_restricted_pickle")
    restricted.Unpickler, restricted.load = Unpickler, lambda file, **kw: Unpickler(file, **kw).load()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "couldn't retrieve source code" for each stand-in class
            # weights_only=False only hands torch our restricted unpickler: its find_class is the allow-list
            return torch.load(str(path), map_location="cpu", pickle_module=restricted, weights_only=False)
    except UnsafeCheckpointError:
        raise
    except Exception as exc:  # a damaged or cut file fails in many ways, inside pickle or torch
        if calls:
            raise UnsafeCheckpointError(f"refusing to load {path}: it would call {calls[0]} while being read; "
                                        "nothing was executed") from None
        raise UserError(f"cannot read checkpoint {path}: {_first_sentence(exc)} (is the file complete?)") from None


def record_class(record: object) -> str:
    """The qualified class name a pickled module's record stands in for."""
    kind = type(record)
    return f"{kind.__module__}.{kind.__qualname__}"


def module_attributes(record: object) -> dict:
    """The attributes a pickled module had (its `__dict__`), or {} for something that is not one."""
    state = getattr(record, "__dict__", {}).get("state")
    return state if isinstance(state, dict) else {}


def module_tensors(record: object, prefix: str = "") -> dict[str, torch.Tensor]:
    """The state dict of a pickled module's record: parameters and buffers under dotted names."""
    attributes = module_attributes(record)
    tensors = {}
    for group in ("_parameters", "_buffers"):
        for name, value in (attributes.get(group) or {}).items():
            if isinstance(value, torch.Tensor):
                tensors[prefix + name] = value.detach()
    for name, child in (attributes.get("_modules") or {}).items():
        tensors.update(module_tensors(child, f"{prefix}{name}."))
    return tensors
