"""Loading what a compare config names: models, functions and arrays, with errors that name the key.

Every function here raises :class:`~netequiv.compare.config.ConfigError` for a problem with
the user's files, so that the command exits with code 2 before any heavy work.
"""

import importlib
import importlib.util
import logging
import sys
from pathlib import Path

import numpy as np

from .config import ConfigError

logger = logging.getLogger("netequiv.compare")

__all__ = ["load_array", "load_function", "load_network", "resolve_device"]


def load_function(spec, folder, key):
    """Import ``"package.module:function"``, or ``"file.py:function"`` relative to ``folder``.

    Parameters
    ----------
    spec : str
        The reference as the config writes it.
    folder : Path
        Folder of the config file, against which a ``.py`` path is resolved.
    key : str
        The config key, such as ``"[correspondence] domain_map"``, for messages.

    Returns
    -------
    callable
    """
    module_name, _, attribute = spec.rpartition(":")
    if not module_name or not attribute:
        raise ConfigError([f"{key}: {spec!r} is invalid; expected \"package.module:function\" or \"file.py:function\"."])
    if module_name.endswith(".py"):
        path = (folder / module_name).resolve()
        if not path.is_file():
            raise ConfigError([f"{key}: file {str(path)!r} not found; fix the path before ':' in {spec!r}."])
        if not path.is_relative_to(folder.resolve()):
            logger.info("%s imports %s, outside the config's folder", key, path)
        module_id = f"netequiv_config_{path.stem}_{abs(hash(str(path)))}"
        module_spec = importlib.util.spec_from_file_location(module_id, path)
        module = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(module)
        except Exception as error:
            raise ConfigError([f"{key}: importing {str(path)!r} failed ({type(error).__name__}: {error}); fix that file."]) from error
        sys.modules.setdefault(module_id, module)
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise ConfigError([
                f"{key}: module {module_name!r} cannot be imported ({error}); install it, add its folder "
                "to PYTHONPATH, or name a file such as \"my_models.py:build\" next to the config."
            ]) from error
    function = getattr(module, attribute, None)
    if not callable(function):
        names = sorted(name for name in vars(module) if not name.startswith("_") and callable(getattr(module, name)))
        raise ConfigError([
            f"{key}: {module_name!r} has no function {attribute!r}; callables there: {', '.join(names[:10]) or 'none'}."
        ])
    return function


def load_array(path, key, array_key=None, *, name):
    """Load an array from ``.npy`` or one array of ``.npz``, without pickle.

    Parameters
    ----------
    path : Path
    key : str
        The config key of ``path``, for messages.
    array_key : str, default=None
        Name of the array inside a ``.npz`` file; needed when it contains more than one.
    name : str
        What the array is, for messages ("inputs", "index pairs").
    """
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ConfigError([f"{key}: {str(path)!r} cannot be read as {name} ({error}); save it with numpy.save or numpy.savez."]) from error
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            names = list(data.files)
            if array_key is None and len(names) == 1:
                array_key = names[0]
            if array_key is None or array_key not in names:
                raise ConfigError([
                    f"{key}: {str(path)!r} holds the arrays {names}; name one with the matching key "
                    "option (key, key_b or breakdown_key)."
                ])
            return data[array_key]
    return data


def resolve_device(device, key):
    """Turn ``"auto"`` into ``"cuda"`` when available, and check that a CUDA device exists."""
    import torch

    # NOTE: the compare pipeline has run on CPUs only; its CUDA path is untested.
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError([f"{key}: device {device!r} is not available on this machine; use \"cpu\" or \"auto\"."])
    return device


def load_network(config, folder):
    """Load the network of a ``[model_a]`` or ``[model_b]`` section, in float64 on its device.

    Loading goes through :func:`netequiv.torch.load_model`, which reads TorchScript,
    torch.export and state-dict files without unpickling anything but tensors. A state dict is
    loaded into the module that ``factory`` builds from ``factory_args`` and ``factory_kwargs``.

    Returns
    -------
    model : torch.nn.Module
    device : str
    """
    import functools

    import torch

    from ..torch.loading import UnsafeModelFileError, load_model

    key = f"[{config.section}]"
    device = resolve_device(config.device, f"{key} device")
    factory = None
    if config.factory is not None:
        factory = functools.partial(load_function(config.factory, folder, f"{key} factory"), *config.factory_args)
    try:
        model = load_model(config.path, factory, map_location=device, factory_kwargs=config.factory_kwargs)
    except UnsafeModelFileError as error:
        raise ConfigError([f"{key} path: {error}"]) from error
    except (ValueError, TypeError, RuntimeError, OSError) as error:
        message = str(error).strip() or type(error).__name__
        # The adapter's messages name the fix, and the key names where to apply it.
        target = "factory" if "factory" in message else "path"
        if "factory" in message and config.factory is not None:
            message += f" (factory_args = {list(config.factory_args)}, factory_kwargs = {config.factory_kwargs})"
        raise ConfigError([f"{key} {target}: {message}"]) from error
    try:
        model = model.to(dtype=torch.float64)
    except (RuntimeError, NotImplementedError) as error:
        logger.warning("%s: the model stays in its own dtype because it cannot be cast to float64 (%s)", key, error)
    return model.eval(), device
