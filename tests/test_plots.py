"""`alexcompress report`: real PNG figures of the expected size, and a clear message without matplotlib."""

from __future__ import annotations

import sys

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from alexcompress.cli.app import app

runner = CliRunner()


def test_report_from_a_dcz_and_from_a_model(tmp_path, files):
    dcz = tmp_path / "m.dcz"
    assert runner.invoke(app, ["encode", str(files["quantized"]), "-o", str(dcz), "-q"]).exit_code == 0
    result = runner.invoke(app, ["report", str(dcz), "-o", str(tmp_path / "fig")])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "fig").iterdir())
    expected = sorted(
        [f"weights_{n}.png" for n in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")]
        + ["bytes.png", "ladder.png", "code_lengths.png"]
    )
    assert names == expected
    for name in names:
        with Image.open(tmp_path / "fig" / name) as image:
            assert image.format == "PNG" and image.size == (1000, 600), name
            assert np.unique(np.asarray(image.convert("L"))).size > 10  # not a blank canvas
    again = runner.invoke(app, ["report", str(dcz), "-o", str(tmp_path / "fig")])
    assert again.exit_code == 1 and "use --force" in again.stderr
    result = runner.invoke(app, ["report", "random:0:10", "--sparsity", "0.9", "--bits", "4", "-o", str(tmp_path / "fig2")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "fig2" / "weights_fc6.png").exists()


def test_missing_matplotlib_is_one_clear_line(tmp_path, files, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    result = runner.invoke(app, ["report", str(files["quantized"]), "-o", str(tmp_path / "x")])
    assert result.exit_code == 1
    assert result.stderr.strip() == "alexcompress: error: report needs matplotlib: pip install 'alexcompress[plot]'"
    assert not (tmp_path / "x").exists()


def test_sensitivity_figure_draws_the_divergence_row_only_where_the_curves_carry_it(tmp_path):
    from alexcompress.cli.plots import sensitivity_figure

    from .test_sensitivity import _curves, _overfit_curves

    pictures = {}
    for name, curves in (("top1", _curves()), ("both", _overfit_curves())):
        with Image.open(sensitivity_figure(tmp_path / f"{name}.png", curves)) as image:
            assert image.format == "PNG" and image.size == (1000, 600)
            pictures[name] = np.asarray(image.convert("L"))

    # each row of panels has a frame: a top and a bottom edge, dark across a third of the picture's width
    def frame_edges(picture):
        dark = (picture < 100).mean(axis=1) > 0.3
        return int((dark[1:] & ~dark[:-1]).sum())

    assert frame_edges(pictures["top1"]) == 2 and frame_edges(pictures["both"]) == 4
