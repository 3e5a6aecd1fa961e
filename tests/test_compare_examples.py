"""The example configs in examples/ pass ``netequiv compare --check``.

The examples compare networks that ``netequiv reproduce`` and examples/train_other_task.py
train, which takes minutes. Here untrained networks of the same architectures stand in for
them, so that the check covers every key, path, selection, input shape and domain map of the
examples.
"""

import logging
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("netequiv.torch")

from netequiv.cli import main  # noqa: E402
from netequiv.experiments._common import mlp  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NETWORKS = {
    "parabola/network_1.pt": [1, 1, 1],
    "parabola/network_2.pt": [1, 8, 8, 8, 1],
    "vector-fields/network_1.pt": [2, 5, 5, 5, 5, 2],
    "vector-fields/network_2.pt": [2, 5, 5, 5, 5, 2],
    "other-task/network.pt": [1, 8, 1],
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("repository")
    shutil.copytree(EXAMPLES, root / "examples")
    for name, widths in NETWORKS.items():
        path = root / "netequiv-out" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(mlp(widths).state_dict(), path)
    return root


def test_examples_exist():
    names = sorted(path.name for path in EXAMPLES.glob("*.toml"))
    assert names == ["other_task.toml", "parabola.toml", "vector_fields.toml"]


@pytest.mark.parametrize("name", ["parabola.toml", "vector_fields.toml", "other_task.toml"])
def test_example_passes_check(workspace, name, caplog):
    with caplog.at_level(logging.INFO, logger="netequiv"):
        code = main(["compare", str(workspace / "examples" / name), "--check"])
    assert code == 0, caplog.text
    assert "is valid" in caplog.text


@pytest.mark.slow
def test_examples_give_documented_verdicts(tmp_path, monkeypatch):
    """Train the parabola and other-task networks, then run both 1-d examples (about a minute)."""
    import json
    import runpy
    import sys

    shutil.copytree(EXAMPLES, tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    assert main(["reproduce", "parabola", "--preset", "quick", "--quiet"]) == 0
    monkeypatch.setattr(sys, "argv", ["train_other_task.py"])
    runpy.run_path(str(tmp_path / "examples" / "train_other_task.py"), run_name="__main__")

    for name, equivalent in (("parabola", True), ("other_task", False)):
        out = tmp_path / f"compare-{name}"
        assert main(["compare", f"examples/{name}.toml", "--out", str(out), "--quiet"]) == 0
        verdict = json.loads((out / "metrics.json").read_text())["verdict"]
        assert verdict["equivalent"] is equivalent, verdict["sentence"]
