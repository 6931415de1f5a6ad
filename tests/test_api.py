"""The library does what the command line does: for each command, the `alexcompress.api` call a notebook
would make gives the same result as the command (files compared bit for bit, figures exactly)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from alexcompress import api
from alexcompress.codec.container import parse_header
from alexcompress.compression.sensitivity import read_curves
from alexcompress.errors import AlexCompressError
from alexcompress.models.state import load_arrays, same_bits
from alexcompress.sources import read_model
from alexcompress.train.data import Preprocessing, image_folder
from tests.test_cli import run
from tests.test_train import make_image_folder

SMALL = ["--image-size", "64", "--resize", "64", "--device", "cpu"]
PREP = Preprocessing(64, 64)


def same_state(a, b) -> bool:
    return list(a) == list(b) and all(same_bits(a[k], b[k]) for k in a)


def pt(path):
    return load_arrays(str(path)).state


def test_init_and_model_keywords(tmp_path):
    assert run("init", "--num-classes", "10", "--seed", "3", "-o", tmp_path / "a.pt").exit_code == 0
    assert same_state(pt(tmp_path / "a.pt"), {k: v.numpy() for k, v in api.init(None, 10, 3).items()})
    assert same_state(pt(tmp_path / "a.pt"), read_model("random:3:10").state)
    with pytest.raises(AlexCompressError, match="seed"):
        api.init(seed=-1)


def test_stages_one_at_a_time(tmp_path):
    pruned, quantized, coded, decoded = (tmp_path / n for n in ("p.pt", "q.pt", "m.dcz", "d.pt"))
    assert run("prune", "random:0:10", "--sparsity", "0.8", "-o", pruned).exit_code == 0
    assert run("quantize", pruned, "--bits", "4", "-o", quantized).exit_code == 0
    assert run("encode", quantized, "--coder", "huffman", "-o", coded).exit_code == 0
    assert run("decode", coded, "-o", decoded).exit_code == 0

    step1 = api.prune(read_model("random:0:10"), api.PruneSpec(sparsity=0.8))
    assert same_state(pt(pruned), step1.state)
    state, report = api.quantize(api.ModelInput(dict(step1.state), "alexnet", "p"), api.QuantizeSpec(bits=4))
    assert same_state(pt(quantized), state) and report.layers
    data = api.encode(state, arch="alexnet", coder="huffman")
    assert data == coded.read_bytes()
    back, arch = api.decode(data)
    assert arch == "alexnet" and same_state(pt(decoded), back)
    with pytest.raises(AlexCompressError, match="not a .dcz"):
        api.decode(b"PK\x03\x04 not a dcz")


def test_compress_verify_and_info(tmp_path):
    out = tmp_path / "c.dcz"
    result = run("compress", "random:0:10", "--sparsity", "0.9", "--verify", "-o", out)
    assert result.exit_code == 0 and "verified" in result.stderr
    compressed = api.compress(read_model("random:0:10"), api.PruneSpec(sparsity=0.9), check=True)
    assert compressed.data == out.read_bytes()
    api.verify(compressed.data, compressed.quantization.state)
    tampered = dict(compressed.quantization.state)
    key = "features.0.weight"
    tampered[key] = tampered[key] + 1
    with pytest.raises(AlexCompressError, match=f"verification failed: {key}"):
        api.verify(compressed.data, tampered)
    found = api.inspect(str(out))
    assert found.header == parse_header(out.read_bytes())
    table = run("info", out).stdout
    assert f"{compressed.ratio:.2f}x" in table.replace(",", "")


def test_eval_predict_and_sensitivity(tmp_path):
    data = make_image_folder(tmp_path / "val", classes=2, per_class=3, size=64)
    result = run("eval", "random:0:2", "--data", data, *SMALL)
    assert result.exit_code == 0, result.output
    top1 = float(re.search(r"top-1 ([\d.]+)%", result.stdout).group(1))
    accuracy = api.evaluate(api.inference_model("random:0:2"), image_folder(str(data), PREP), device="cpu")
    assert f"{accuracy.top1:.2%}" == f"{top1:.2f}%"

    image = sorted((data / "class1").iterdir())[0]
    result = run("predict", "random:0:2", image, "--topk", "2", *SMALL)
    assert result.exit_code == 0, result.output
    (prediction,) = api.predict(api.inference_model("random:0:2"), [str(image)], PREP, topk=2, device="cpu")
    printed = [float(x) / 100 for x in re.findall(r"([\d.]+)%", result.stdout)]
    assert np.allclose(printed, prediction.probabilities, atol=1e-6)

    saved = tmp_path / "curves.json"
    grids = ["--keep-grid", "1,0.1", "--bits-grid", "4,2"]
    assert run("sensitivity", "random:0:2", "--data", data, *grids, "--save", saved, *SMALL).exit_code == 0
    curves = api.sensitivity(read_model("random:0:2"), image_folder(str(data), PREP), keep_grid=(1.0, 0.1), bits_grid=(4, 2), device="cpu")
    from_cli = json.loads(saved.read_text())
    from_api = json.loads(curves.to_json())
    from_cli.pop("seconds"), from_api.pop("seconds")
    assert from_cli == from_api
    assert read_curves(saved).samples == curves.samples == 6


def test_the_package_declares_its_lazy_names_to_type_checkers():
    import ast
    from pathlib import Path

    import alexcompress

    tree = ast.parse(Path(alexcompress.__file__).read_text())
    guarded = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "typing.TYPE_CHECKING")
    declared = {alias.asname or alias.name: node.module for node in guarded.body for alias in node.names}
    assert declared == {name: f"alexcompress.{module}" for name, module in alexcompress._EXPORTS.items()}
    for name in declared:
        assert getattr(alexcompress, name) is not None
