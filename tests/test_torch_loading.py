import io
import json
import shutil
import zipfile

import numpy as np
import pytest
import torch

from _torch_models import MLP, make_mlp
from netequiv.torch import UnsafeModelFileError, activations, jacobians, load_model, model_format

# torch.jit.script, save and load are deprecated in torch 2.13, but TorchScript files remain a
# supported input.
pytestmark = [
    pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return make_mlp()


@pytest.fixture(scope="module")
def inputs():
    return np.random.default_rng(0).uniform(-1, 1, size=(7, 2))


def assert_same_network(loaded, model, inputs, selection="act1 output"):
    np.testing.assert_allclose(activations(loaded, inputs, selection), activations(model, inputs, selection), rtol=1e-13)


def export_program(model, dynamic=True):
    example = torch.zeros(3, 2, dtype=torch.float64)
    shapes = {"x": {0: torch.export.Dim.DYNAMIC}} if dynamic else None
    return torch.export.export(model, (example,), dynamic_shapes=shapes)


def test_state_dict_with_factory_string(tmp_path, model, inputs):
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    assert model_format(path) == "state_dict"
    loaded = load_model(path, factory="_torch_models:make_mlp")
    assert isinstance(loaded, MLP)
    assert not loaded.training
    assert_same_network(loaded, model, inputs)


def test_state_dict_factory_kwargs_and_checkpoint_key(tmp_path, inputs):
    torch.manual_seed(1)
    wide = make_mlp(hidden=5)
    path = tmp_path / "checkpoint.pt"
    torch.save({"epoch": 3, "model_state_dict": wide.state_dict()}, path)
    loaded = load_model(path, factory=make_mlp, factory_kwargs={"hidden": 5})
    assert_same_network(loaded, wide, inputs)
    torch.save({"epoch": 3, "weights": wide.state_dict()}, path)
    with pytest.raises(ValueError, match="state_dict_key"):
        load_model(path, factory=make_mlp, factory_kwargs={"hidden": 5})
    loaded = load_model(path, factory=make_mlp, factory_kwargs={"hidden": 5}, state_dict_key="weights")
    assert_same_network(loaded, wide, inputs)


def test_safetensors_state_dict(tmp_path, model, inputs):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    path = tmp_path / "weights.safetensors"
    safetensors_torch.save_file(model.state_dict(), str(path))
    assert model_format(path) == "safetensors"
    assert_same_network(load_model(path, factory="_torch_models:make_mlp"), model, inputs)


def test_torchscript_file(tmp_path, model, inputs):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    assert model_format(path) == "torchscript"
    loaded = load_model(path)
    assert isinstance(loaded, torch.jit.ScriptModule)
    assert_same_network(loaded, model, inputs, "output")
    np.testing.assert_allclose(jacobians(loaded, inputs, "output"), jacobians(model, inputs, "output"), rtol=1e-12)
    with pytest.raises(ValueError, match="do not support forward hooks"):
        activations(loaded, inputs, "act1")


def test_export_archive_keeps_layer_names(tmp_path, model, inputs):
    path = tmp_path / "exported.pt2"
    torch.export.save(export_program(model), str(path))
    assert model_format(path) == "export"
    loaded = load_model(path)
    assert_same_network(loaded, model, inputs, "fc1:0-3 act2 output")
    np.testing.assert_allclose(jacobians(loaded, inputs, "act2"), jacobians(model, inputs, "act2"), rtol=1e-12)


def test_export_with_static_batch_is_rejected(tmp_path, model):
    path = tmp_path / "static.pt2"
    torch.export.save(export_program(model, dynamic=False), str(path))
    with pytest.raises(ValueError, match="static batch size of 3.*Dim.DYNAMIC"):
        load_model(path)


def _rewrite_archive(source, target, edit):
    """Copy a zip archive, passing each member's (name, bytes) through ``edit``."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for name in old.namelist():
            result = edit(name, old.read(name))
            if result is not None:
                new.writestr(*result)


def test_export_with_pickled_payload_is_rejected(tmp_path, model):
    path = tmp_path / "exported.pt2"
    torch.export.save(export_program(model), str(path))

    def mark_pickled(name, data):
        if name.endswith("_weights_config.json"):
            config = json.loads(data)
            next(iter(config["config"].values()))["use_pickle"] = True
            data = json.dumps(config).encode()
        return name, data

    tampered = tmp_path / "pickled.pt2"
    _rewrite_archive(path, tampered, mark_pickled)
    with pytest.raises(UnsafeModelFileError, match="is pickled"):
        load_model(tampered)

    native = tmp_path / "native.pt2"
    shutil.copy(path, native)
    with zipfile.ZipFile(native, "a") as archive:
        archive.writestr("exported/data/aotinductor/model/model.so", b"\x7fELF")
    with pytest.raises(UnsafeModelFileError, match="aotinductor"):
        load_model(native)


def test_pickled_full_model_is_rejected(tmp_path, model):
    path = tmp_path / "full_model.pt"
    torch.save(model, path)
    with pytest.raises(UnsafeModelFileError, match="never unpickles") as raised:
        load_model(path, factory="_torch_models:make_mlp")
    message = str(raised.value)
    assert "torch.save(model.state_dict()" in message
    assert "torch.export.save" in message


def test_pickled_object_in_legacy_format_is_rejected(tmp_path, model):
    path = tmp_path / "legacy.pt"
    torch.save({"model": model}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeModelFileError, match="pickled Python objects"):
        load_model(path, factory=make_mlp)


def test_state_dict_errors(tmp_path, model):
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(ValueError, match="pass factory"):
        load_model(path)
    with pytest.raises(ValueError, match="cannot be imported"):
        load_model(path, factory="no_such_package.models:build")
    with pytest.raises(ValueError, match="has no attribute"):
        load_model(path, factory="_torch_models:no_such_function")
    with pytest.raises(ValueError, match="invalid"):
        load_model(path, factory="_torch_models.make_mlp")
    with pytest.raises(ValueError, match="does not fit"):
        load_model(path, factory=make_mlp, factory_kwargs={"hidden": 3})


def test_factory_rejected_for_files_with_architecture(tmp_path, model):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    with pytest.raises(ValueError, match="factory is used only for state dicts"):
        load_model(path, factory=make_mlp)


def test_unknown_file_is_rejected(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a model")
    with pytest.raises(ValueError, match="not a model file"):
        load_model(path)
    archive = tmp_path / "other.zip"
    with zipfile.ZipFile(archive, "w") as file:
        file.writestr("folder/readme.txt", "hello")
    with pytest.raises(ValueError, match="zip archive but neither"):
        load_model(archive)


def test_map_location_is_applied(tmp_path, model):
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    path = tmp_path / "weights.pt"
    path.write_bytes(buffer.getvalue())
    loaded = load_model(path, factory=make_mlp, map_location="cpu")
    assert all(parameter.device.type == "cpu" for parameter in loaded.parameters())
