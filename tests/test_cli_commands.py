"""The small commands of the CLI: help texts, init and inspect."""

import logging

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("netequiv.torch")

from netequiv.cli import build_parser, main  # noqa: E402
from test_compare_config import write_models  # noqa: E402

COMMANDS = ("reproduce", "compare", "apply", "inspect", "init")


@pytest.mark.parametrize("command", COMMANDS)
def test_help_lists_exit_codes(command, capsys):
    with pytest.raises(SystemExit) as raised:
        main([command, "--help"])
    assert raised.value.code == 0
    text = capsys.readouterr().out
    assert "Exit codes: 0 done, 1 failed, 2 bad input." in text
    assert "--quiet" in text
    assert "--verbose" in text


def test_every_option_has_help():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(COMMANDS) <= set(commands)
    for name, subparser in commands.items():
        for action in subparser._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help text"


def test_inspect_lists_layers(tmp_path, capsys):
    write_models(tmp_path)
    code = main([
        "inspect", str(tmp_path / "network_1.pt"), "--factory", str(tmp_path / "nets.py") + ":tanh_net",
        "--factory-kwargs", '{"widths": [1, 6, 1]}', "--input-shape", "1",
    ])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["act1"][1] == "Tanh"
    assert rows["act1"][-1] == "6"
    assert rows["fc2"][-1] == "1"
    assert "input" in rows
    assert "output" in rows


def test_inspect_needs_example_input(tmp_path, caplog):
    write_models(tmp_path)
    with caplog.at_level(logging.ERROR, logger="netequiv"):
        code = main([
            "inspect", str(tmp_path / "network_1.pt"), "--factory", str(tmp_path / "nets.py") + ":tanh_net",
            "--factory-kwargs", '{"widths": [1, 6, 1]}',
        ])
    assert code == 2
    assert "--input-shape" in caplog.text


def test_inspect_state_dict_without_factory(tmp_path, caplog):
    write_models(tmp_path)
    with caplog.at_level(logging.ERROR, logger="netequiv"):
        code = main(["inspect", str(tmp_path / "network_1.pt"), "--input-shape", "1"])
    assert code == 2
    assert "factory" in caplog.text


def test_inspect_wrong_input_shape(tmp_path, caplog):
    write_models(tmp_path)
    with caplog.at_level(logging.ERROR, logger="netequiv"):
        code = main([
            "inspect", str(tmp_path / "network_1.pt"), "--factory", str(tmp_path / "nets.py") + ":tanh_net",
            "--factory-kwargs", '{"widths": [1, 6, 1]}', "--input-shape", "3",
        ])
    assert code == 2
    assert "--input-shape" in caplog.text


def test_init_default_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["init", "-q"]) == 0
    assert (tmp_path / "netequiv.toml").read_text().startswith("# netequiv compare configuration")


def test_inspect_example_from_file(tmp_path, capsys):
    import numpy as np

    write_models(tmp_path)
    np.save(tmp_path / "inputs.npy", np.zeros((4, 1)))
    code = main([
        "inspect", str(tmp_path / "network_2.pt"), "--factory", str(tmp_path / "nets.py") + ":tanh_net",
        "--factory-kwargs", '{"widths": [1, 6, 1]}', "--inputs", str(tmp_path / "inputs.npy"),
    ])
    assert code == 0
    assert "act1" in capsys.readouterr().out


def test_inspect_invalid_factory_kwargs(tmp_path, caplog):
    write_models(tmp_path)
    with caplog.at_level(logging.ERROR, logger="netequiv"):
        code = main([
            "inspect", str(tmp_path / "network_1.pt"), "--factory", str(tmp_path / "nets.py") + ":tanh_net",
            "--factory-kwargs", "widths=[1, 6, 1]", "--input-shape", "1",
        ])
    assert code == 2
    assert "--factory-kwargs" in caplog.text
