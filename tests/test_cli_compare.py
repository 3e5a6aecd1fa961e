"""``netequiv compare`` and ``netequiv apply`` end to end, on small networks built in the test.

Model A and model B are one-hidden-layer tanh networks with different fixed random weights on the
inputs x in [-1, 1]. Their six hidden neurons are each monotone in x, so both sets embed the
interval and the pair is equivalent. A model B whose input is x squared folds the interval onto
[0, 1]: its neurons no longer tell x from -x, so that pair is not equivalent.
"""

import base64
import io
import json
import logging
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("netequiv.torch")
pytest.importorskip("netequiv.transformation")

from netequiv.cli import main  # noqa: E402
from test_compare_config import config_text, write_models  # noqa: E402

FOLDED_B = """
    path = "network_2.pt"
    factory = "nets.py:tanh_net"
    factory_kwargs = { widths = [1, 6, 1], fold = true }
    selection = "act1"
"""


def run_compare(folder, text, *extra):
    """Write the config and run ``netequiv compare``; return the exit code and the output folder."""
    path = folder / "compare.toml"
    path.write_text(text)
    out = folder / "out"
    code = main(["compare", str(path), "--out", str(out), "--quiet", *extra])
    return code, out


@pytest.fixture(scope="module")
def equivalent_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("equivalent")
    write_models(folder)
    np.save(folder / "path.npy", np.linspace(-1.0, 1.0, 60)[:, None])
    text = config_text().replace('dimension = 1', 'dimension = 1\nbreakdown_path = "path.npy"')
    code, out = run_compare(folder, text)
    return folder, code, out


@pytest.fixture(scope="module")
def folded_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("folded")
    write_models(folder, fold_b=True)
    return run_compare(folder, config_text(model_b=FOLDED_B))


def test_equivalent_pair_verdict(equivalent_run):
    _, code, out = equivalent_run
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["verdict"]["equivalent"] is True
    assert metrics["verdict"]["sentence"].startswith("The two networks are equivalent")
    assert metrics["held_out"]["relative_rmse_a_to_b"] < 0.1
    assert len(metrics["held_out"]["relative_rmse_per_neuron_b"]) == 6


def test_equivalent_pair_outputs(equivalent_run):
    _, _, out = equivalent_run
    assert (out / "transformation.npz").is_file()
    for name in ("spectra", "embeddings", "held_out", "breakdown"):
        assert (out / "figures" / f"{name}.png").is_file(), name


def test_report_images_decode(equivalent_run):
    from matplotlib.image import imread

    _, _, out = equivalent_run
    page = (out / "report.html").read_text()
    assert "The two networks are equivalent" in page
    # Self-contained: no external stylesheets, scripts or images.
    assert not re.search(r'(src|href)="(?!data:)', page)
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 4
    for data in images:
        pixels = imread(io.BytesIO(base64.b64decode(data)), format="png")
        assert pixels.ndim == 3
        assert min(pixels.shape[:2]) > 100


def test_verdict_leads_report(equivalent_run):
    _, _, out = equivalent_run
    page = (out / "report.html").read_text()
    assert page.index('class="verdict') < page.index("<h2>")
    assert page.index("<h2>Breakdown along the path</h2>") < page.index("<h2>Figures</h2>")
    assert page.index("<h2>Figures</h2>") < page.index("<img")


def test_folded_pair_not_equivalent(folded_run):
    code, out = folded_run
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["verdict"]["equivalent"] is False
    assert metrics["verdict"]["sentence"].startswith("The two networks are not equivalent")
    assert "not equivalent" in (out / "report.html").read_text()


def test_existing_output_needs_force(equivalent_run, caplog):
    folder, _, out = equivalent_run
    before = (out / "metrics.json").read_text()
    with caplog.at_level(logging.ERROR, logger="netequiv"):
        code = main(["compare", str(folder / "compare.toml"), "--out", str(out), "--quiet"])
    assert code == 2
    assert "--force" in caplog.text
    assert (out / "metrics.json").read_text() == before


def test_apply_matches_transform(equivalent_run, tmp_path):
    from netequiv.torch import activations
    from netequiv.torch.loading import load_model
    from netequiv.transformation import NetworkTransformation
    from test_compare_config import NETS_PY

    folder, _, out = equivalent_run
    namespace = {}
    exec(compile(NETS_PY, "nets.py", "exec"), namespace)
    model_a = load_model(folder / "network_1.pt", namespace["tanh_net"], factory_kwargs={"widths": [1, 6, 1]}).double()
    Y_a = activations(model_a, np.linspace(-0.9, 0.9, 25)[:, None], "act1:0-5")
    np.save(tmp_path / "a.npy", Y_a)

    assert main(["apply", str(out), str(tmp_path / "a.npy"), "-o", str(tmp_path / "b.npy"), "-q"]) == 0
    expected = NetworkTransformation.load(out / "transformation.npz").transform(Y_a)
    np.testing.assert_allclose(np.load(tmp_path / "b.npy"), expected)

    assert main(["apply", str(out), str(tmp_path / "b.npy"), "-o", str(tmp_path / "a2.npy"), "--inverse", "-q"]) == 0
    inverse = NetworkTransformation.load(out / "transformation.npz").inverse_transform(expected)
    np.testing.assert_allclose(np.load(tmp_path / "a2.npy"), inverse)


def test_apply_reads_npz_key(equivalent_run, tmp_path):
    from netequiv.transformation import NetworkTransformation

    _, _, out = equivalent_run
    transformation = NetworkTransformation.load(out / "transformation.npz")
    Y_b = transformation.transform(transformation.diffusion_map_1_.X_fit_[:10])
    np.savez(tmp_path / "activations.npz", other=np.zeros(3), model_b=Y_b)
    code = main(["apply", str(out), str(tmp_path / "activations.npz"), "--key", "model_b", "--inverse", "-o", str(tmp_path / "a.npy"), "-q"])
    assert code == 0
    np.testing.assert_allclose(np.load(tmp_path / "a.npy"), transformation.inverse_transform(Y_b))


def test_apply_rejects_wrong_width(equivalent_run, tmp_path, caplog):
    _, _, out = equivalent_run
    np.save(tmp_path / "a.npy", np.zeros((5, 4)))
    with caplog.at_level(logging.ERROR, logger="netequiv"):
        code = main(["apply", str(out), str(tmp_path / "a.npy"), "-o", str(tmp_path / "b.npy")])
    assert code == 2
    assert "(n, 6)" in caplog.text


def test_apply_rejects_nan_activations(equivalent_run, tmp_path, caplog):
    _, _, out = equivalent_run
    activations = np.zeros((5, 6))
    activations[3, 1] = np.nan
    np.save(tmp_path / "a.npy", activations)
    with caplog.at_level(logging.ERROR, logger="netequiv"):
        code = main(["apply", str(out), str(tmp_path / "a.npy"), "-o", str(tmp_path / "b.npy")])
    assert code == 2
    assert "first in row 3" in caplog.text
    assert not (tmp_path / "b.npy").exists()


KINDS = {
    "burst": {"neighbourhoods": 'kind = "burst"\nscale = 0.01\npoints = 16\ncentres = 200'},
    "ball sampler, estimated d": {"inputs": 'sampler = "ball"\ncenter = [0.0]\nradius = 1.0\nn_samples = 500\ndimension = "estimate"'},
    "domain map": {"correspondence": 'kind = "domain-map"\ndomain_map = "nets.py:stretch"\npairs = 4\nheld_out = 60'},
    "sequence": {"inputs": 'file = "sequence.npy"\ndimension = 1', "neighbourhoods": 'kind = "sequence"\nwindow = 7\ncentres = 200'},
    # The two embeddings use different random inputs here, which needs more centres for the
    # same accuracy.
    "index file": {
        "neighbourhoods": 'kind = "jacobian"\ncentres = 300',
        "inputs": 'file = "inputs_a.npy"\nfile_b = "inputs_b.npy"\ndimension = 1',
        "correspondence": 'kind = "index-file"\nindex_file = "pairs.npy"\npairs = 4\nheld_out = 60',
    },
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_input_kinds_equivalent(tmp_path, kind):
    write_models(tmp_path)
    np.save(tmp_path / "sequence.npy", np.linspace(-1.0, 1.0, 600)[:, None])
    # Model B's inputs are model A's in shuffled order; pairs.npy maps each row of A to its row of B.
    rng = np.random.default_rng(0)
    inputs_a = rng.uniform(-1.0, 1.0, size=(500, 1))
    order = rng.permutation(500)
    np.save(tmp_path / "inputs_a.npy", inputs_a)
    np.save(tmp_path / "inputs_b.npy", inputs_a[order])
    np.save(tmp_path / "pairs.npy", np.stack([np.arange(300), np.argsort(order)[:300]], axis=1))

    code, out = run_compare(tmp_path, config_text(**KINDS[kind]))
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["dimension"] == 1
    assert metrics["verdict"]["equivalent"] is True
    assert metrics["held_out"]["relative_rmse_a_to_b"] < 0.1


def test_shuffled_index_file_not_equivalent(tmp_path):
    write_models(tmp_path)
    rng = np.random.default_rng(0)
    np.save(tmp_path / "inputs_a.npy", rng.uniform(-1.0, 1.0, size=(500, 1)))
    np.save(tmp_path / "inputs_b.npy", rng.uniform(-1.0, 1.0, size=(500, 1)))
    # Pairs of unrelated inputs: no map can match them.
    np.save(tmp_path / "pairs.npy", np.stack([np.arange(300), rng.permutation(500)[:300]], axis=1))
    code, out = run_compare(tmp_path, config_text(**KINDS["index file"]))
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["verdict"]["equivalent"] is False


CONV_NETS_PY = '''
import torch


class ConvNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)
        self.act = torch.nn.Tanh()
        self.fc = torch.nn.Linear(2 * 8 * 8, 5)
        self.out = torch.nn.Tanh()

    def forward(self, x):
        return self.out(self.fc(self.act(self.conv(x)).flatten(1)))


def conv_net():
    return ConvNet()
'''


def test_image_sequence_equivalent(tmp_path):
    # Frames of a blob moving left to right: images of shape (1, 8, 8) on a curve with d = 1.
    (tmp_path / "conv_nets.py").write_text(CONV_NETS_PY)
    namespace = {}
    exec(compile(CONV_NETS_PY, "conv_nets.py", "exec"), namespace)
    grid = np.arange(8.0)
    centres = np.linspace(1.5, 5.5, 500)
    frames = np.exp(-((grid[None, None, :] - centres[:, None, None]) ** 2 + (grid[None, :, None] - 3.5) ** 2) / 4.0)
    np.save(tmp_path / "frames.npy", frames[:, None])
    for index, name in enumerate(("a", "b")):
        torch.manual_seed(index)
        model = namespace["conv_net"]()
        with torch.no_grad():
            model.fc.weight.mul_(3.0)
        torch.save(model.state_dict(), tmp_path / f"{name}.pt")

    text = config_text(
        model_a='path = "a.pt"\nfactory = "conv_nets.py:conv_net"\nselection = "out"',
        model_b='path = "b.pt"\nfactory = "conv_nets.py:conv_net"\nselection = "fc:0-3 conv:(0,3,3)"',
        inputs='file = "frames.npy"\ndimension = 1',
        neighbourhoods='kind = "sequence"\nwindow = 9\ncentres = 200',
    )
    code, out = run_compare(tmp_path, text)
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["models"]["b"]["neurons"] == ["fc[0]", "fc[1]", "fc[2]", "fc[3]", "conv[0,3,3]"]
    assert metrics["verdict"]["equivalent"] is True


def test_fit_failure_exits_one(tmp_path, caplog):
    write_models(tmp_path)
    # Two neighbours a point cannot connect 300 centres into one kNN graph.
    text = config_text(diffusion_map="n_neighbors = 2")
    with caplog.at_level(logging.ERROR, logger="netequiv"):
        code, out = run_compare(tmp_path, text)
    assert code == 1
    assert "fitting the transformation failed" in caplog.text
    assert "[diffusion_map]" in caplog.text
    assert "Traceback" not in caplog.text
    assert not out.exists()


def test_force_keeps_other_files(tmp_path):
    write_models(tmp_path)
    out = tmp_path / "out"
    stale = out / "figures" / "breakdown.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    (out / "notes.txt").write_text("mine")
    # This run scans no breakdown path, so the old breakdown figure must go.
    code, _ = run_compare(tmp_path, config_text(), "--force")
    assert code == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert not stale.exists()
    assert (out / "figures" / "spectra.png").is_file()
    assert json.loads((out / "metrics.json").read_text())["breakdown"] is None
