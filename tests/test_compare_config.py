"""Validation of compare configs: every kind of bad input exits with code 2 and names its key.

The models are small tanh networks with fixed random weights, saved as state dicts next to the
config and built by a factory in a ``nets.py`` file there, as a user would.
"""

import logging
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("netequiv.torch")

from netequiv.cli import main  # noqa: E402
from netequiv.compare import ConfigError, load_config  # noqa: E402

NETS_PY = '''
import torch


class TanhNet(torch.nn.Module):
    """x -> tanh(fc1(g(x))) -> fc2, where g is x itself or, with fold=True, x squared."""

    def __init__(self, widths, fold=False):
        super().__init__()
        self.fold = fold
        self.fc1 = torch.nn.Linear(widths[0], widths[1])
        self.act1 = torch.nn.Tanh()
        self.fc2 = torch.nn.Linear(widths[1], widths[2])

    def forward(self, x):
        if self.fold:
            x = x**2
        return self.fc2(self.act1(self.fc1(x)))


def tanh_net(widths, fold=False):
    return TanhNet(widths, fold)


def stretch(x):
    """An increasing map of [-1, 1] onto itself, as a torch function."""
    return torch.tanh(1.5 * x) / torch.tanh(torch.tensor(1.5, dtype=x.dtype))
'''


def write_models(folder, *, hidden=6, fold_b=False, seed=0):
    """Write nets.py and two state dicts, network_1.pt and network_2.pt, into ``folder``."""
    (folder / "nets.py").write_text(NETS_PY)
    namespace = {}
    exec(compile(NETS_PY, "nets.py", "exec"), namespace)
    torch.manual_seed(seed)
    for name, fold in (("network_1", False), ("network_2", fold_b)):
        model = namespace["tanh_net"]([1, hidden, 1], fold=fold)
        with torch.no_grad():
            # Weights of size about 2 make every hidden neuron vary over the inputs [-1, 1].
            model.fc1.weight.normal_(0.0, 2.0)
            model.fc1.bias.uniform_(-1.0, 1.0)
        torch.save(model.state_dict(), folder / f"{name}.pt")


def config_text(**sections):
    """A valid config for the models of write_models; keyword arguments replace whole sections."""
    base = {
        "model_a": """
            path = "network_1.pt"
            factory = "nets.py:tanh_net"
            factory_kwargs = { widths = [1, 6, 1] }
            selection = "act1:0-5"
        """,
        "model_b": """
            path = "network_2.pt"
            factory = "nets.py:tanh_net"
            factory_kwargs = { widths = [1, 6, 1] }
            selection = "act1"
        """,
        "inputs": """
            sampler = "box"
            low = [-1.0]
            high = [1.0]
            n_samples = 500
            dimension = 1
        """,
        "neighbourhoods": """
            kind = "jacobian"
            centres = 200
        """,
        "correspondence": """
            kind = "same-inputs"
            pairs = 4
            held_out = 60
        """,
        # Fewer permutations and refits than the defaults keep the tests fast; 49 permutations
        # still resolve p-values down to 0.02.
        "test": """
            n_permutations = 49
            n_subsamples = 4
        """,
    }
    base.update(sections)
    parts = ["seed = 0"]
    for name, body in base.items():
        if body is not None:
            parts.append(f"[{name}]\n{textwrap.dedent(body).strip()}")
    return "\n\n".join(parts) + "\n"


@pytest.fixture
def project(tmp_path):
    write_models(tmp_path)
    return tmp_path


def check_config(folder, text, caplog):
    """Write the config, run ``netequiv compare --check`` on it; return the exit code and the log."""
    path = folder / "compare.toml"
    path.write_text(text)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="netequiv"):
        code = main(["compare", str(path), "--check", "--out", str(folder / "out")])
    return code, caplog.text


def test_valid_config_passes_check(project, caplog):
    code, log = check_config(project, config_text(), caplog)
    assert code == 0, log
    assert "is valid" in log


def test_valid_config_values(project):
    path = project / "compare.toml"
    path.write_text(config_text())
    config = load_config(path)
    assert config.model_a.path == project / "network_1.pt"
    assert config.model_a.factory_kwargs == {"widths": [1, 6, 1]}
    assert config.inputs.dimension == 1
    assert config.neighbourhoods.centres == 200
    assert config.correspondence.pairs == 4
    assert config.diffusion_map == {}


@pytest.mark.parametrize(
    ("section", "body", "expected"),
    [
        ("model_a", 'path = "network_1.pt"\nfactory = "nets.py:tanh_net"\nfactory_kwargs = { widths = [1, 6, 1] }\nselecton = "act1"',
         ["[model_a] selecton", "did you mean 'selection'"]),
        ("neighbourhoods", 'kind = "jacobian"\ncentres = 200\nradious = 0.1', ["[neighbourhoods] radious", "'radius'"]),
        ("diffusion_map", "n_neighbours = 10", ["[diffusion_map] n_neighbours", "'n_neighbors'"]),
    ],
)
def test_unknown_key_names_key(project, caplog, section, body, expected):
    code, log = check_config(project, config_text(**{section: body}), caplog)
    assert code == 2
    for fragment in expected:
        assert fragment in log


def test_unknown_section_suggests_name(project, caplog):
    text = config_text() + "\n[neighborhoods]\nkind = \"ball\"\n"
    code, log = check_config(project, text, caplog)
    assert code == 2
    assert "[neighborhoods]: unknown section; did you mean [neighbourhoods]?" in log


def test_missing_model_file_names_path(project, caplog):
    (project / "network_2.pt").unlink()
    code, log = check_config(project, config_text(), caplog)
    assert code == 2
    assert "[model_b] path" in log
    assert "network_2.pt" in log
    assert "not found" in log


def test_missing_section_reported(project, caplog):
    code, log = check_config(project, config_text(model_b=None), caplog)
    assert code == 2
    assert "[model_b]: missing section" in log


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('kind = "jacobian"\ncentres = "many"', "[neighbourhoods] centres"),
        ('kind = "sphere"\ncentres = 200', "[neighbourhoods] kind"),
        ('kind = "ball"\ncentres = 200', "[neighbourhoods] radius"),
        ('kind = "sequence"\ncentres = 200', "[neighbourhoods] window"),
    ],
)
def test_invalid_value_names_key(project, caplog, body, key):
    code, log = check_config(project, config_text(neighbourhoods=body), caplog)
    assert code == 2
    assert key in log


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("eigen_tol = inf", "[diffusion_map] eigen_tol: inf is invalid; expected a finite non-negative number."),
        ("epsilon = inf", "[diffusion_map] epsilon: inf is invalid"),
        ('eigen_solver = "lobpcg"', '"auto", "dense", "arpack" or "chebyshev"'),
    ],
)
def test_invalid_diffusion_map_value_rejected(project, caplog, body, expected):
    code, log = check_config(project, config_text(diffusion_map=body), caplog)
    assert code == 2
    assert expected in log


def test_chebyshev_solver_accepted(project, caplog):
    code, _ = check_config(project, config_text(diffusion_map='eigen_solver = "chebyshev"'), caplog)
    assert code == 0


def test_all_problems_reported_together(project, caplog):
    text = config_text(neighbourhoods='kind = "sphere"\ncentres = 200', correspondence='kind = "same-inputs"\npairs = 0')
    code, log = check_config(project, text, caplog)
    assert code == 2
    assert "[neighbourhoods] kind" in log
    assert "[correspondence] pairs" in log


def test_sampler_and_file_exclusive(project, caplog):
    np.save(project / "inputs.npy", np.linspace(-1, 1, 500)[:, None])
    inputs = 'file = "inputs.npy"\nsampler = "box"\nlow = [-1.0]\nhigh = [1.0]\nn_samples = 500'
    code, log = check_config(project, config_text(inputs=inputs), caplog)
    assert code == 2
    assert "[inputs] file / sampler" in log


def test_too_few_inputs_names_n_samples(project, caplog):
    inputs = 'sampler = "box"\nlow = [-1.0]\nhigh = [1.0]\nn_samples = 250'
    code, log = check_config(project, config_text(inputs=inputs), caplog)
    assert code == 2
    assert "[inputs] n_samples" in log
    assert "200 + 60" in log


def test_input_shape_mismatch_names_file(project, caplog):
    np.save(project / "inputs.npy", np.zeros((500, 3)))
    code, log = check_config(project, config_text(inputs='file = "inputs.npy"\ndimension = 1'), caplog)
    assert code == 2
    assert "[inputs] file" in log
    assert "per-sample shape (3,)" in log


def test_missing_selection_layer_names_key(project, caplog):
    model_a = 'path = "network_1.pt"\nfactory = "nets.py:tanh_net"\nfactory_kwargs = { widths = [1, 6, 1] }\nselection = "act2:0-3"'
    code, log = check_config(project, config_text(model_a=model_a), caplog)
    assert code == 2
    assert "[model_a] selection" in log
    assert "'act2'" in log
    assert "act1" in log  # a close name is suggested


def test_neuron_index_out_of_range(project, caplog):
    model_b = 'path = "network_2.pt"\nfactory = "nets.py:tanh_net"\nfactory_kwargs = { widths = [1, 6, 1] }\nselection = "act1:0,9"'
    code, log = check_config(project, config_text(model_b=model_b), caplog)
    assert code == 2
    assert "[model_b] selection" in log


def test_state_dict_without_factory(project, caplog):
    code, log = check_config(project, config_text(model_a='path = "network_1.pt"\nselection = "act1"'), caplog)
    assert code == 2
    assert "[model_a] factory" in log


def test_factory_not_found(project, caplog):
    model_a = 'path = "network_1.pt"\nfactory = "nets.py:missing_net"\nselection = "act1"'
    code, log = check_config(project, config_text(model_a=model_a), caplog)
    assert code == 2
    assert "[model_a] factory" in log
    assert "tanh_net" in log  # the callables that exist are listed


def test_state_dict_shape_mismatch(project, caplog):
    model_a = 'path = "network_1.pt"\nfactory = "nets.py:tanh_net"\nfactory_kwargs = { widths = [1, 5, 1] }\nselection = "act1"'
    code, log = check_config(project, config_text(model_a=model_a), caplog)
    assert code == 2
    assert "[model_a] factory" in log or "[model_a] path" in log
    assert "widths" in log


def test_domain_map_not_importable(project, caplog):
    correspondence = 'kind = "domain-map"\ndomain_map = "no_such_module_xyz:f"\npairs = 4\nheld_out = 60'
    code, log = check_config(project, config_text(correspondence=correspondence), caplog)
    assert code == 2
    assert "[correspondence] domain_map" in log
    assert "no_such_module_xyz" in log


def test_domain_map_from_file_passes(project, caplog):
    correspondence = 'kind = "domain-map"\ndomain_map = "nets.py:stretch"\npairs = 4\nheld_out = 60'
    code, log = check_config(project, config_text(correspondence=correspondence), caplog)
    assert code == 0, log


def test_index_file_kind_needs_file(project, caplog):
    np.save(project / "inputs.npy", np.linspace(-1, 1, 500)[:, None])
    inputs = 'file = "inputs.npy"\nfile_b = "inputs.npy"\ndimension = 1'
    code, log = check_config(project, config_text(inputs=inputs, correspondence='kind = "index-file"'), caplog)
    assert code == 2
    assert "[correspondence] index_file" in log


def test_index_file_out_of_range(project, caplog):
    np.save(project / "inputs.npy", np.linspace(-1, 1, 500)[:, None])
    np.save(project / "pairs.npy", np.stack([np.arange(200), np.arange(200) + 400], axis=1))
    inputs = 'file = "inputs.npy"\nfile_b = "inputs.npy"\ndimension = 1'
    correspondence = 'kind = "index-file"\nindex_file = "pairs.npy"\npairs = 4\nheld_out = 60'
    code, log = check_config(project, config_text(inputs=inputs, correspondence=correspondence), caplog)
    assert code == 2
    assert "[correspondence] index_file" in log
    assert "out of range" in log


def test_invalid_toml_reported(project, caplog):
    code, log = check_config(project, "[model_a\npath = 1\n", caplog)
    assert code == 2
    assert "invalid TOML" in log


def test_missing_config_file(tmp_path, caplog):
    with caplog.at_level(logging.ERROR, logger="netequiv"):
        code = main(["compare", str(tmp_path / "absent.toml"), "--check"])
    assert code == 2
    assert "config file not found" in caplog.text


def test_path_outside_folder_logged(project, caplog):
    inner = project / "configs"
    inner.mkdir()
    text = config_text().replace('"network_1.pt"', '"../network_1.pt"').replace('"network_2.pt"', '"../network_2.pt"')
    text = text.replace('"nets.py:', '"../nets.py:')
    code, log = check_config(inner, text, caplog)
    assert code == 0, log
    assert "outside the config's folder" in log


def test_config_error_lists_problems(project):
    path = project / "compare.toml"
    path.write_text(config_text(neighbourhoods='kind = "ball"\ncentres = 5'))
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert len(raised.value.problems) == 2
    assert all(str(path) in problem for problem in raised.value.problems)


def test_init_writes_valid_config(tmp_path, caplog):
    from netequiv.experiments._common import mlp

    path = tmp_path / "netequiv.toml"
    assert main(["init", str(path)]) == 0
    # The example compares the state dicts of the parabola experiment's two networks.
    for name, widths in (("network_1", [1, 1, 1]), ("network_2", [1, 8, 8, 8, 1])):
        torch.save(mlp(widths).state_dict(), tmp_path / f"{name}.pt")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="netequiv"):
        code = main(["compare", str(path), "--check"])
    assert code == 0, caplog.text


def test_init_keeps_existing_file(tmp_path, caplog):
    path = tmp_path / "netequiv.toml"
    path.write_text("# mine\n")
    with caplog.at_level(logging.ERROR, logger="netequiv"):
        assert main(["init", str(path)]) == 2
    assert "exists" in caplog.text
    assert path.read_text() == "# mine\n"


def test_torchscript_hidden_layer_names_selection(project, caplog, monkeypatch):
    import importlib

    monkeypatch.syspath_prepend(str(project))
    nets = importlib.import_module("nets")
    model = nets.tanh_net([1, 6, 1])
    model.load_state_dict(torch.load(project / "network_1.pt", weights_only=True))
    torch.jit.save(torch.jit.script(model), project / "scripted.pt")
    monkeypatch.delitem(__import__("sys").modules, "nets")

    code, log = check_config(project, config_text(model_a='path = "scripted.pt"\nselection = "act1:0-5"'), caplog)
    assert code == 2
    assert "[model_a] selection" in log
    assert "TorchScript" in log

    code, log = check_config(project, config_text(model_a='path = "scripted.pt"\nselection = "output"'), caplog)
    assert code == 0, log


@pytest.mark.parametrize(
    ("test_section", "correspondence", "key"),
    [
        ("alpha = 0.01\nn_permutations = 49", None, "[test] n_permutations"),
        (None, 'kind = "same-inputs"\npairs = 4\nheld_out = 3', "[correspondence] held_out"),
    ],
)
def test_unreachable_alpha_names_key(project, caplog, test_section, correspondence, key):
    sections = {}
    if test_section is not None:
        sections["test"] = test_section
    if correspondence is not None:
        sections["correspondence"] = correspondence
    code, log = check_config(project, config_text(**sections), caplog)
    assert code == 2
    assert key in log


def test_metrics_in_chunks_match_one_pass(project, monkeypatch):
    from netequiv.compare import pipeline

    path = project / "compare.toml"
    path.write_text(config_text())
    prepared = pipeline.prepare(load_config(path))
    inputs = prepared.inputs_a[:100]
    whole, rank, _ = pipeline._chunked_metrics(prepared, "a", inputs, None, 6, False, None)
    # One value a chunk forces the smallest chunks, 16 points each.
    monkeypatch.setattr(pipeline, "CHUNK_VALUES", 1)
    chunked, chunked_rank, jacobians = pipeline._chunked_metrics(prepared, "a", inputs, None, 6, False, None, keep_jacobians=True)
    assert rank == 1
    assert chunked_rank == 1
    np.testing.assert_allclose(chunked, whole)
    assert jacobians.shape == (100, 6, 1)


def test_dimension_above_neurons(project, caplog):
    inputs = 'sampler = "box"\nlow = [-1.0]\nhigh = [1.0]\nn_samples = 500\ndimension = 2'
    model_a = 'path = "network_1.pt"\nfactory = "nets.py:tanh_net"\nfactory_kwargs = { widths = [1, 6, 1] }\nselection = "act1:0"'
    code, log = check_config(project, config_text(inputs=inputs, model_a=model_a), caplog)
    assert code == 2
    assert "[inputs] dimension" in log
    assert "[model_a] selection" in log


def _run_compare(folder, text, caplog):
    path = folder / "compare.toml"
    path.write_text(text)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="netequiv"):
        code = main(["compare", str(path), "--out", str(folder / "out"), "-q"])
    return code, caplog.text


def test_constant_neuron_is_bad_input(project, caplog):
    state = torch.load(project / "network_1.pt", weights_only=True)
    state["fc1.weight"][2] = 0.0
    state["fc1.bias"][2] = 0.0
    torch.save(state, project / "network_1.pt")
    code, log = _run_compare(project, config_text(), caplog)
    assert code == 2
    assert "[model_a] selection" in log
    assert "act1[2]" in log
    assert not (project / "out" / "metrics.json").exists()


def test_too_few_neurons_warn(project, caplog):
    model_a = 'path = "network_1.pt"\nfactory = "nets.py:tanh_net"\nfactory_kwargs = { widths = [1, 6, 1] }\nselection = "act1:0-1"'
    code, log = _run_compare(project, config_text(model_a=model_a), caplog)
    assert code == 0, log
    assert "2d + 1 = 3" in log
