"""Load trained models from files without unpickling arbitrary Python objects.

Unpickling runs whatever code a file names, so a model file from elsewhere must never be
unpickled. :func:`load_model` reads four formats, recognised by their content, not their
extension:

- **TorchScript** archives (``torch.jit.save``), read by TorchScript's own deserializer, which
  builds TorchScript types only.
- **torch.export** archives (``torch.export.save``, ``.pt2``). ``torch.export.load`` unpickles
  some payloads (tensor subclasses, opaque objects, sample inputs that are not plain tensors) and
  loads compiled AOTInductor libraries, so the archive is inspected first and rejected when it
  contains any of them. The program is unflattened, which restores the module names.
- **state dicts** saved with ``torch.save(model.state_dict(), path)``, read with
  ``torch.load(..., weights_only=True)``, which unpickles tensors and plain containers only.
- **state dicts** in ``safetensors`` files (needs the ``safetensors`` package).

A state dict contains weights but not the architecture, so it needs a ``factory``, a function
given as ``"package.module:function"`` that builds the untrained model. The file is read into
memory once, and every check and the loading use those bytes, so the file cannot change between
them. Loading therefore needs memory for twice the file's size.
"""

import importlib
import io
import json
import os
import pickle
import zipfile
from collections.abc import Mapping

import torch

__all__ = ["UnsafeModelFileError", "load_model", "model_format", "resolve_factory"]

FORMATS = ("torchscript", "export", "state_dict", "safetensors")

_SAVE_ADVICE = (
    "Save the model in one of these forms instead: "
    "a state dict, torch.save(model.state_dict(), 'model.pt') or "
    "safetensors.torch.save_file(model.state_dict(), 'model.safetensors'), loaded with "
    "factory='package.module:function' (a function that builds the model); "
    "TorchScript, torch.jit.save(torch.jit.script(model), 'model.pt'); or "
    "a torch.export archive, torch.export.save(torch.export.export(model, (example,), "
    "dynamic_shapes=...), 'model.pt2')."
)

# Top-level entries of a torch.export archive that load without unpickling or native code.
_EXPORT_ALLOWED_PREFIXES = (
    "archive_format",
    "archive_version",
    "byteorder",
    ".data/",
    "models/",
    "data/weights/",
    "data/constants/",
    "data/sample_inputs/",
    "extra/",
)


class UnsafeModelFileError(ValueError):
    """A model file would need unpickling arbitrary objects or loading native code."""


def _unsafe(path, reason):
    return UnsafeModelFileError(
        f"{path} is rejected because {reason}; netequiv never unpickles arbitrary objects, because "
        f"unpickling runs code that the file names. {_SAVE_ADVICE}"
    )


def _zip_members(data):
    """Names of a zip archive's members, without the archive's root folder."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
    return [name.split("/", 1)[1] if "/" in name else name for name in names]


def _is_safetensors(data):
    if len(data) < 10:
        return False
    header_size = int.from_bytes(data[:8], "little")
    return 0 < header_size <= len(data) - 8 and data[8:9] == b"{"


def _format_of_bytes(data, path):
    if data[:4] == b"PK\x03\x04":
        members = set(_zip_members(data))
        if "archive_format" in members and any(name.startswith("models/") for name in members):
            return "export"
        if "constants.pkl" in members and any(name.startswith("code/") for name in members):
            return "torchscript"
        if "data.pkl" in members:
            return "state_dict"
        if "serialized_exported_program.json" in members:
            raise _unsafe(
                path,
                "it is a torch.export archive in an older format (serialized_exported_program.json), "
                "whose payloads torch.export.load unpickles",
            )
        raise ValueError(
            f"{path} is a zip archive but neither a TorchScript, a torch.export nor a torch.save "
            f"archive (members: {sorted(members)[:8]}). {_SAVE_ADVICE}"
        )
    if _is_safetensors(data):
        return "safetensors"
    # torch.save files from before PyTorch 1.6 start with a pickle protocol marker.
    if data[:1] == b"\x80":
        return "state_dict"
    raise ValueError(f"{path} is not a model file netequiv can read (unknown content). {_SAVE_ADVICE}")


def model_format(path):
    """Return the format of a model file: "torchscript", "export", "state_dict" or "safetensors".

    The format is recognised from the file's content.
    """
    with open(path, "rb") as file:
        return _format_of_bytes(file.read(), path)


def resolve_factory(factory):
    """Return the callable that ``factory`` names; ``"package.module:function"`` or a callable."""
    if callable(factory):
        return factory
    if not isinstance(factory, str) or factory.count(":") != 1:
        raise ValueError(
            f"factory={factory!r} is invalid; expected 'package.module:function', a function that "
            "builds the untrained model."
        )
    module_name, attribute_path = factory.split(":")
    try:
        target = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(
            f"factory {factory!r}: module {module_name!r} cannot be imported ({error}); install its "
            "package or add its folder to sys.path (PYTHONPATH)."
        ) from error
    for part in attribute_path.split("."):
        if not hasattr(target, part):
            raise ValueError(f"factory {factory!r}: {module_name!r} has no attribute {attribute_path!r}.")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"factory {factory!r} names a {type(target).__name__}, which is not callable.")
    return target


def _check_export_archive(data, path):
    """Raise UnsafeModelFileError unless torch.export.load can read the archive without pickle."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        root = {}
        for name in archive.namelist():
            member = name.split("/", 1)[1] if "/" in name else name
            root[member] = name
        for member in root:
            if not member.startswith(_EXPORT_ALLOWED_PREFIXES) and not member.endswith("/"):
                raise _unsafe(path, f"it contains {member!r}, which torch.export loads as native code or pickle")
        models = [m[len("models/") : -len(".json")] for m in root if m.startswith("models/") and m.endswith(".json")]
        for model in models:
            for legacy in (f"data/weights/{model}.pt", f"data/constants/{model}.pt"):
                if legacy in root:
                    raise _unsafe(path, f"its payload {legacy!r} is in the pickled format of older PyTorch versions")
            for kind in ("weights", "constants"):
                config_name = f"data/{kind}/{model}_{kind}_config.json"
                if config_name not in root:
                    continue
                config = json.loads(archive.read(root[config_name]))
                for fqn, payload in config.get("config", {}).items():
                    if payload.get("use_pickle"):
                        raise _unsafe(path, f"its {kind[:-1]} {fqn!r} is pickled (a tensor subclass)")
                    if kind == "constants" and not payload.get("path_name", "").startswith("tensor_"):
                        raise _unsafe(path, f"its constant {fqn!r} is a pickled Python or TorchBind object")
            sample_name = f"data/sample_inputs/{model}.pt"
            if sample_name in root:
                # torch.export.load tries weights_only=True first and, after any error, falls back
                # to a full unpickle, so every error here rejects the file.
                try:
                    torch.load(io.BytesIO(archive.read(root[sample_name])), weights_only=True)
                except Exception:
                    raise _unsafe(path, "its sample inputs contain objects other than tensors") from None


def _check_dynamic_batch(program, path):
    placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    for name in program.graph_signature.user_inputs:
        node = placeholders.get(name)
        value = None if node is None else node.meta.get("val")
        shape = getattr(value, "shape", None)
        if shape and isinstance(shape[0], int):
            raise ValueError(
                f"{path} was exported with a static batch size of {shape[0]} for input {name!r}, so "
                "it runs only on batches of exactly that size. Export it with a dynamic batch "
                "dimension: torch.export.export(model, (example,), dynamic_shapes={"
                f"'{name}': {{0: torch.export.Dim.DYNAMIC}}}})."
            )


def _state_dict_from(loaded, path, state_dict_key):
    if not isinstance(loaded, Mapping):
        raise ValueError(
            f"{path} contains a {type(loaded).__name__}, not a state dict. {_SAVE_ADVICE}"
        )
    if state_dict_key is not None:
        if state_dict_key not in loaded:
            raise KeyError(f"{path} has no key {state_dict_key!r}; its keys are {list(loaded)[:10]}.")
        loaded = loaded[state_dict_key]
    elif not all(isinstance(value, torch.Tensor) for value in loaded.values()):
        # A training checkpoint: the weights under a conventional key, next to other entries.
        nested = [
            key
            for key in ("state_dict", "model_state_dict", "model")
            if isinstance(loaded.get(key), Mapping)
        ]
        if len(nested) != 1:
            raise ValueError(
                f"{path} is a mapping with non-tensor values (keys {list(loaded)[:10]}); pass "
                "state_dict_key to name the entry that holds the state dict."
            )
        loaded = loaded[nested[0]]
    if not isinstance(loaded, Mapping) or not all(isinstance(value, torch.Tensor) for value in loaded.values()):
        raise ValueError(f"the state dict in {path} contains values that are not tensors.")
    return loaded


def _load_state_dict_file(data, path, file_format, map_location):
    if file_format == "safetensors":
        try:
            from safetensors.torch import load as load_safetensors
        except ImportError as error:
            raise ImportError(
                f"{path} is a safetensors file, and reading it needs the safetensors package: "
                "pip install safetensors"
            ) from error
        tensors = load_safetensors(data)
        return {name: tensor.to(map_location) for name, tensor in tensors.items()}
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise _unsafe(
            path,
            "it contains pickled Python objects other than tensors, such as a whole model saved "
            f"with torch.save(model, path) (torch.load: {first_line})",
        ) from None


def load_model(
    path,
    factory=None,
    *,
    map_location="cpu",
    factory_kwargs=None,
    state_dict_key=None,
    strict=True,
):
    """Load a trained model from a TorchScript, torch.export, state-dict or safetensors file.

    See the module docstring for the formats and why nothing else is accepted.

    Parameters
    ----------
    path : str or os.PathLike
        The model file.
    factory : str or callable, default=None
        For state dicts: ``"package.module:function"`` or a callable that returns the untrained
        ``torch.nn.Module``. Not allowed for TorchScript and torch.export files, which contain
        the architecture.
    map_location : str or torch.device, default="cpu"
        Device the model is loaded onto.
    factory_kwargs : dict, default=None
        Keyword arguments for ``factory``.
    state_dict_key : str, default=None
        Key of the state dict inside a checkpoint mapping. None uses the file's mapping itself
        when all its values are tensors, else its single entry named ``"state_dict"``,
        ``"model_state_dict"`` or ``"model"``.
    strict : bool, default=True
        Passed to :meth:`torch.nn.Module.load_state_dict`: every key must match.

    Returns
    -------
    model : torch.nn.Module
        In evaluation mode. A torch.export archive gives an unflattened module whose submodule
        names are those of the exported model.

    Raises
    ------
    UnsafeModelFileError
        The file would need unpickling arbitrary objects or loading native code. The message
        explains how to save the model instead.
    """
    path = os.fspath(path)
    with open(path, "rb") as file:
        data = file.read()
    file_format = _format_of_bytes(data, path)
    if factory is not None and file_format in ("torchscript", "export"):
        raise ValueError(
            f"{path} is a {file_format} file, which contains the architecture; factory is used "
            "only for state dicts. Call load_model without factory."
        )

    if file_format == "torchscript":
        model = torch.jit.load(io.BytesIO(data), map_location=map_location)
    elif file_format == "export":
        _check_export_archive(data, path)
        program = torch.export.load(io.BytesIO(data))
        _check_dynamic_batch(program, path)
        model = torch.export.unflatten(program).to(map_location)
    else:
        state_dict = _state_dict_from(
            _load_state_dict_file(data, path, file_format, map_location), path, state_dict_key
        )
        if factory is None:
            raise ValueError(
                f"{path} is a state dict, which contains weights but not the architecture; pass "
                "factory='package.module:function', a function that builds the untrained model."
            )
        model = resolve_factory(factory)(**(factory_kwargs or {}))
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"factory {factory!r} returned a {type(model).__name__}, not a torch.nn.Module.")
        try:
            model.load_state_dict(state_dict, strict=strict)
        except RuntimeError as error:
            raise ValueError(
                f"the state dict in {path} does not fit the model that factory {factory!r} builds: "
                f"{error}"
            ) from error
        model = model.to(map_location)
    model.eval()
    return model
