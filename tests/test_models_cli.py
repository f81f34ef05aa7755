"""``fervid models``: every registered architecture with its size, cost and description."""
from __future__ import annotations

import json

import pytest

from fervid.cli import main
from fervid.models import count_params, create_model, describe_model, list_models


@pytest.fixture(scope="module")
def table():
    import torch

    torch.set_num_threads(1)
    from fervid.cli.models import model_table

    return model_table()


def test_json_lists_every_registered_model(capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list_models() and len(rows) >= 7
    for r in rows:
        assert r["params"] > 0 and r["mflops"] > 0, r
        assert r["params"] == count_params(create_model(r["name"]))
        assert r["description"] == describe_model(r["name"]) and r["description"]
    by_name = {r["name"]: r for r in rows}
    # the VGG widths grow, and so do size and cost
    assert by_name["vgg_tiny"]["params"] < by_name["vgg_s"]["params"] < by_name["vgg_m"]["params"]
    assert by_name["vgg_tiny"]["mflops"] < by_name["vgg_s"]["mflops"] < by_name["vgg_m"]["mflops"]


def test_table_is_aligned(table, capsys):
    from fervid.cli.models import format_table

    lines = format_table(table).splitlines()
    assert lines[0].split()[:3] == ["model", "params", "MFLOPs"]
    assert len(lines) == len(list_models()) + 1
    start = lines[0].index("description")
    for line, row in zip(lines[1:], table):
        assert line.startswith(row["name"] + " ")
        assert line[start:] == row["description"]  # descriptions start in one column
        params = line.split()[1]
        assert params.endswith("M") and float(params[:-1]) == pytest.approx(row["params"] / 1e6, abs=0.006)
        assert float(line.split()[2]) == pytest.approx(row["mflops"], abs=0.06)


def test_cli_table_and_head_size(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out.split("\n\n")[0].splitlines()  # the architectures; shipped models follow
    assert {line.split()[0] for line in out[1:]} == set(list_models())
    assert main(["models", "--json", "--num-classes", "3"]) == 0
    three = {r["name"]: r["params"] for r in json.loads(capsys.readouterr().out)}
    assert three["vgg_tiny"] == count_params(create_model("vgg_tiny", num_classes=3))
    assert three["vgg_tiny"] < count_params(create_model("vgg_tiny", num_classes=7))
    assert main(["models", "--num-classes", "0"]) == 2
    assert "--num-classes" in capsys.readouterr().err
