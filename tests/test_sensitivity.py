"""Sensitivity curves, automatic allocation and the entropy-constrained quantizer."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from alexcompress.codec import huffman
from alexcompress.compression.quantization import _envelope, ecsq_1d, kmeans_1d, quantize
from alexcompress.compression.sensitivity import (
    Curves,
    LayerCurve,
    _keep_points,
    _Planner,
    allocate,
    allocate_measured,
    check_allocation,
    coded_bytes,
    read_curves,
)
from alexcompress.errors import AlexCompressError

from .test_cli import one_error_line, run
from .test_train import make_image_folder


def _huffman_bits(labels: np.ndarray) -> float:
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    return float((counts * huffman.code_lengths(counts)).sum() / counts.sum())


def _bell(n=60_000, seed=0) -> np.ndarray:
    w = np.random.default_rng(seed).laplace(0, 0.01, n).astype(np.float32)
    return w[np.abs(w) > np.quantile(np.abs(w), 0.8)]


@settings(max_examples=60, deadline=None)
@given(
    centroids=st.lists(st.floats(-10, 10, allow_nan=False), min_size=1, max_size=12, unique=True),
    penalties=st.lists(st.floats(0, 5, allow_nan=False), min_size=12, max_size=12),
    points=st.lists(st.floats(-12, 12, allow_nan=False), min_size=1, max_size=30),
)
def test_envelope_is_the_argmin_of_the_costs(centroids, penalties, points):
    c = np.sort(np.asarray(centroids, dtype=np.float64))
    if c.size > 1 and np.diff(c).min() < 1e-6:
        return
    penalty = np.asarray(penalties[: c.size])
    boundaries, winners = _envelope(c, penalty)
    w = np.asarray(points)
    chosen = winners[np.searchsorted(boundaries, w, side="left")]
    cost = (w[:, None] - c[None, :]) ** 2 + penalty[None, :]
    np.testing.assert_allclose(cost[np.arange(w.size), chosen], cost.min(axis=1), rtol=1e-9, atol=1e-9)


def test_ecsq_trades_distortion_for_rate_and_zero_weight_is_kmeans():
    w = _bell()
    c0, l0, _ = kmeans_1d(w, 32)
    c1, l1, _ = ecsq_1d(w, 32, rate_weight=0.0)
    np.testing.assert_array_equal(c0, c1)
    np.testing.assert_array_equal(l0, l1)
    rates, errors = [], []
    for weight in (0.0, 0.005, 0.02, 0.1):
        c, labels, _ = ecsq_1d(w, 32, rate_weight=weight)
        assert c.size <= 32 and np.all(np.diff(c) > 0) and labels.max() < c.size
        rates.append(_huffman_bits(labels))
        errors.append(float(((c[labels] - w) ** 2).mean()))
    assert rates == sorted(rates, reverse=True) and rates[-1] < rates[0] - 1.5
    assert errors == sorted(errors)
    # at the same coded rate, ECSQ's distortion beats k-means with fewer clusters (its whole point)
    c, labels, _ = ecsq_1d(w, 32, rate_weight=0.02)
    kc, kl, _ = kmeans_1d(w, 2 ** int(np.ceil(_huffman_bits(labels))))
    assert _huffman_bits(kl) >= _huffman_bits(labels)
    assert ((c[labels] - w) ** 2).mean() < ((kc[kl] - w) ** 2).mean()


def test_quantize_with_ecsq_encodes_smaller_and_round_trips():
    from alexcompress.models.dcz import decode, encode

    rng = np.random.default_rng(1)
    state = {"a.weight": rng.laplace(0, 0.02, (64, 300)).astype(np.float32), "a.bias": np.zeros(64, np.float32)}
    sizes = {}
    for quantizer in ("kmeans", "ecsq"):
        q = quantize(state, bits=5, arch="none", quantizer=quantizer, rate_weight=0.05).state
        data = encode(q, arch="none")
        sizes[quantizer] = len(data)
        back, _ = decode(data)
        assert np.array_equal(back["a.weight"].numpy(), np.asarray(q["a.weight"]))
    assert sizes["ecsq"] < 0.8 * sizes["kmeans"]
    with pytest.raises(AlexCompressError, match="unknown quantizer"):
        quantize(state, arch="none", quantizer="lloyd")


def _curves() -> Curves:
    """Two layers of equal size: `robust` loses nothing down to 5%, `fragile` loses fast below 50%."""
    keep = (1.0, 0.5, 0.25, 0.1, 0.05)
    robust = LayerCurve("robust.weight", "robust", 100_000, 100_000, dict.fromkeys(keep, 0.9), {8: 0.9, 5: 0.9, 3: 0.9, 2: 0.88})
    fragile = LayerCurve(
        "fragile.weight",
        "fragile",
        100_000,
        100_000,
        {1.0: 0.9, 0.5: 0.9, 0.25: 0.8, 0.1: 0.5, 0.05: 0.3},
        {8: 0.9, 5: 0.9, 3: 0.85, 2: 0.6},
    )
    return Curves("none", 0.9, 1000, [robust, fragile], raw_bytes=800)


def test_allocation_spends_bytes_where_accuracy_needs_them():
    curves = _curves()
    chosen = allocate(curves, target_ratio=15)
    assert chosen.rates["robust.weight"] < chosen.rates["fragile.weight"]
    assert chosen.predicted_ratio >= 15 and chosen.predicted_drop == 0.0
    # 20x costs accuracy: the cheapest way is fragile at 3 bits (-5 pp), not at 25% (-10 pp)
    harder = allocate(curves, target_ratio=20)
    assert harder.predicted_ratio >= 20 and harder.predicted_drop == pytest.approx(5.0)
    assert (harder.rates["fragile.weight"], harder.bits["fragile.weight"]) == (0.5, 3)
    tight = allocate(curves, target_ratio=45)
    assert tight.predicted_ratio >= 45 and tight.predicted_drop > 0
    assert allocate(curves, max_drop=0.0).predicted_drop == 0.0
    loose = allocate(curves, max_drop=5.0)
    assert loose.predicted_drop <= 5.0 and loose.predicted_bytes < allocate(curves, max_drop=0.0).predicted_bytes
    assert loose.rates_option().startswith("robust=") and "fragile=" in loose.bits_option()
    with pytest.raises(AlexCompressError, match="out of reach"):
        allocate(curves, target_ratio=1000)
    with pytest.raises(AlexCompressError, match="one of them"):
        allocate(curves, target_ratio=20, max_drop=1)
    check_allocation(
        chosen, {"robust.weight": np.zeros((100, 1000), np.float32), "fragile.weight": np.zeros((1000, 100), np.float32)}, "none"
    )
    with pytest.raises(AlexCompressError, match="measured on another model"):
        check_allocation(chosen, {"robust.weight": np.zeros((10, 10), np.float32)}, "none")


def _overfit_curves() -> Curves:
    """An over-fitting model's curves: pruning either layer alone *raises* validation top-1 down to 5% keep,
    but `deep`'s predictions move ten times further than `wide`'s as it goes (the divergence)."""
    top1 = {1.0: 0.80, 0.5: 0.81, 0.25: 0.82, 0.1: 0.82, 0.05: 0.81}
    bits = {8: 0.80, 4: 0.80, 2: 0.81}
    wide_kl = {1.0: 0.0, 0.5: 0.001, 0.25: 0.003, 0.1: 0.01, 0.05: 0.03}
    layers = [
        LayerCurve(
            f"{name}.weight",
            name,
            100_000,
            100_000,
            dict(top1),
            dict(bits),
            {k: scale * v for k, v in wide_kl.items()},
            {8: 0.0, 4: scale * 0.0005, 2: scale * 0.002},
        )
        for name, scale in (("wide", 1.0), ("deep", 10.0))
    ]
    return Curves("none", 0.80, 1000, layers, raw_bytes=800)


def test_allocation_ranks_by_divergence_where_top1_reads_flat():
    curves = _overfit_curves()
    assert curves.has_divergence and not _curves().has_divergence
    chosen = allocate(curves, target_ratio=20)
    assert chosen.predicted_ratio >= 20 and chosen.predicted_drop == 0.0
    # top-1 sees no cost anywhere; the divergence puts the bytes in the layer whose predictions move most
    assert chosen.rates["deep.weight"] > chosen.rates["wide.weight"]
    kl_at = {layer.key: {keep: kl for keep, _, kl in _keep_points(layer)} for layer in curves.layers}
    assert chosen.predicted_kl == pytest.approx(
        sum(kl_at[layer.key][chosen.rates[layer.key]] + layer.bits_kl[chosen.bits[layer.key]] for layer in curves.layers)
    )
    # between measured keep rates the allocation may choose interpolated ones, which hit the target closely
    assert chosen.predicted_ratio < 1.1 * 20 and not all(chosen.rates[layer.key] in layer.keep for layer in curves.layers)
    # ranked by top-1 alone (a version-1 file) the two layers tie, and nothing protects `deep`
    for layer in curves.layers:
        layer.keep_kl, layer.bits_kl = {}, {}
    flat = allocate(curves, target_ratio=20)
    assert flat.predicted_kl is None and flat.rates["deep.weight"] == flat.rates["wide.weight"]
    assert allocate(_curves(), target_ratio=15).predicted_kl is None


def _pick(planner: _Planner, price: float) -> dict:
    """The Lagrangian choice at one price, by definition: each layer's option of least damage + price x
    bytes (ties: the smaller file). `_Planner.path` must hold every such choice without trying prices."""
    out = {}
    for key, rows in planner.options.items():
        out[key] = min(rows, key=lambda r: (r[2] + price * r[4], r[4]))
    return out


def test_measured_allocation_searches_the_path_by_the_drop_of_all_layers_together():
    curves = _overfit_curves()
    path = _Planner(curves).path()
    sizes = [a.predicted_bytes for a in path]
    assert len(path) > 5 and sizes == sorted(sizes, reverse=True) and path[0].predicted_ratio < 4.1
    assert any(abs(a.predicted_ratio - allocate(curves, target_ratio=20).predicted_ratio) < 1e-9 for a in path)
    for planner in (_Planner(curves), _Planner(_curves())):  # ranked by divergence, and by top-1 (ties)
        walk = planner.path()
        on_path = {(tuple(a.rates.items()), tuple(a.bits.items())) for a in walk}
        assert all(a.predicted_bytes > b.predicted_bytes for a, b in zip(walk, walk[1:]))
        for price in [0.0, *np.logspace(-12, 3, 200)]:  # the hull walk holds every choice a price can make
            picked = planner.allocation(_pick(planner, price))
            assert (tuple(picked.rates.items()), tuple(picked.bits.items())) in on_path, price
    probes = []

    def top1(allocation):  # the layers together lose 1 pp per 10x of ratio: what the curves (0.00 pp) miss
        probes.append(allocation)
        return (0.80 if allocation is None else 0.80 - allocation.predicted_ratio / 1000), 500

    chosen = allocate_measured(curves, 3.0, top1)
    assert chosen.predicted_ratio <= 30 and chosen.measured_drop <= 3.0 and chosen.measured[2] == 500
    bigger = [a for a in path if a.predicted_bytes < chosen.predicted_bytes]
    assert bigger and bigger[0].predicted_ratio > 30  # the next file along the path breaks the budget
    assert len(probes) <= 3 + len(path).bit_length()  # as given, both ends, then halving: not a scan
    with pytest.raises(AlexCompressError, match="even the least compression"):
        allocate_measured(curves, 0.1, lambda a: (0.80 if a is None else 0.70, 500))
    assert allocate_measured(curves, 1.0, lambda a: (0.80, 500)).predicted_bytes == sizes[-1]  # nothing lost: smallest


def _edited(curves: Curves, edit) -> str:
    obj = json.loads(curves.to_json())
    edit(obj)
    return json.dumps(obj).replace('"1e999"', "1e999")  # a literal json.dumps cannot write (it writes Infinity)


@pytest.mark.parametrize(
    "edit, text, message",
    [
        (None, "[" * 100_000 + "]" * 100_000, "nested 100000 deep, more than 8"),
        (lambda o: o["layers"][0].update(weights="1e999"), None, r"layers\[0\]: field 'weights' must be an integer, got float"),
        (lambda o: o["layers"][0].update(weights=10**30), None, r"field 'weights' must be in \[1, 1\.09951e\+12\]"),
        (lambda o: o["layers"][0]["bits"].update({"24": 0.5}), None, r"field 'bits' point must be in \[1, 8\], got 24"),
        (lambda o: o["layers"][0]["bits"].update({"-2": 0.5}), None, r"field 'bits' point must be in \[1, 8\], got -2"),
        (lambda o: o.update(raw_bytes=-997101312), None, r"field 'raw_bytes' must be in \[0, "),
        (lambda o: o.update(baseline="1e999"), None, r"field 'baseline' must be in \[0, 1\], got inf"),
        (
            lambda o: o["layers"][0].update(keep={str(i / 100_000): 0.5 for i in range(1, 80_001)}),
            None,
            "must hold 1 to 1000 points, got 80000",
        ),
        (lambda o: o["layers"][0].update(keep={"x": 0.5}), None, "has a point 'x' that is not a number"),
        (lambda o: o["layers"][0].update(keep=[1]), None, "field 'keep' must be an object, got list"),
        (lambda o: o.pop("arch"), None, "field 'arch' is missing"),
        (lambda o: o["layers"].append(3), None, r"layers\[2\]: expected an object, got int"),
    ],
)
def test_hostile_curves_files_are_one_line_errors(tmp_path, edit, text, message):
    """Whatever a curves file holds, reading it is fast and ends in one line naming the file and the field."""
    path = tmp_path / "c.json"
    path.write_text(text if text is not None else _edited(_curves(), edit))
    with pytest.raises(AlexCompressError, match=message) as caught:
        read_curves(path)
    assert str(caught.value).startswith(str(path)) and "\n" not in str(caught.value)


def test_curves_file_round_trip_and_refusals(tmp_path):
    curves = _curves()
    path = tmp_path / "c.json"
    path.write_text(curves.to_json())
    back = read_curves(path)
    assert back.layers[1].keep == curves.layers[1].keep and back.layers[0].bits == curves.layers[0].bits
    path.write_text('{"format": "something else"}')
    with pytest.raises(AlexCompressError, match="not a sensitivity file"):
        read_curves(path)
    path.write_text(curves.to_json().replace("0.88", "NaN"))
    with pytest.raises(AlexCompressError, match="NaN is not allowed"):
        read_curves(path)
    # version 2 carries the divergence; version 1 files (no divergence) still read, and allocate by top-1
    overfit = _overfit_curves()
    path.write_text(overfit.to_json())
    back = read_curves(path)
    assert back.layers[1].keep_kl == overfit.layers[1].keep_kl and back.layers[0].bits_kl == overfit.layers[0].bits_kl
    path.write_text(curves.to_json().replace("sensitivity-2", "sensitivity-1"))
    assert not read_curves(path).has_divergence
    text = overfit.to_json()
    path.write_text(text.replace('"0.05": 0.3', '"0.04": 0.3'))  # a divergence at a point top-1 was not measured at
    with pytest.raises(AlexCompressError, match="not at its top-1 curves' points"):
        read_curves(path)
    path.write_text(text.replace('"0.05": 0.3', '"0.05": -0.3'))
    with pytest.raises(AlexCompressError, match=r"field .keep_kl. at 0.05 must be in \[0, inf\], got -0.3"):
        read_curves(path)


def test_sensitivity_and_allocation_through_the_cli(tmp_path):
    data = make_image_folder(tmp_path / "val", classes=2, per_class=3, size=64)
    small = ["--image-size", "64", "--resize", "64", "--device", "cpu"]
    curves, figure = tmp_path / "curves.json", tmp_path / "curves.png"
    result = run(
        "sensitivity",
        "random:0:2",
        "--data",
        data,
        "--keep-grid",
        "1,0.1,0.05",
        "--bits-grid",
        "4,2",
        "--save",
        curves,
        "--plot",
        figure,
        *small,
    )
    assert result.exit_code == 0, result.output
    assert "conv1" in result.stdout and "fc8" in result.stdout and "6 validation images, 42 evaluations" in result.stdout
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(read_curves(curves).layers) == 8
    out = tmp_path / "auto.dcz"
    result = run("compress", "random:0:2", "--target-ratio", "60", "--curves", curves, "-o", out)
    assert result.exit_code == 0, result.output
    assert "Automatic allocation" in result.stderr and "paper keep" in result.stderr
    predicted = float(result.stderr.split("predicted: ")[1].split("x,")[0].split(", ")[1])
    actual = 57_012_034 * 4 / out.stat().st_size
    assert abs(actual / predicted - 1) < 0.03, (predicted, actual)  # the size model, on uniform weights
    # the allocation is moved until the real file meets the target (a prediction can fall either side)
    real = float(result.stderr.split("(k-means, encoded): ")[1].split("x")[0])
    assert 60 <= actual < 63 and abs(real - actual) < 0.1, (real, actual)
    result = run("prune", "random:0:2", "--max-drop", "1", "--curves", curves, "-o", tmp_path / "p.pt")
    assert result.exit_code == 0 and "quantize the result with: --layer-bits 'conv1=" in result.stderr
    assert "measured:" not in result.stderr  # no validation images: the curves' prediction
    # with validation images, --max-drop is measured with every layer changed together; the file follows it
    training = ["--data", data, "--val", data, "--epochs", "0", *small]
    result = run("prune", "random:0:2", "--max-drop", "1", "--curves", curves, "-o", tmp_path / "m.pt", *training)
    assert result.exit_code == 0, result.output
    assert "every layer changed together" in result.stderr and "6 validation images)" in result.stderr
    assert "note: one validation image is 16.67 pp (6 images), more than --max-drop 1" in result.stderr  # noise-bound
    measured = float(result.stderr.split("measured: top-1 ")[1].split("%")[0])
    given = float(result.stderr.split("measured: top-1 ")[1].split("(")[1].split("%")[0])
    assert given - measured <= 1.0
    rates = dict(item.split("=") for item in result.stderr.split("--layer-bits '")[1].split("'")[0].split(","))
    assert set(rates) == {"conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"}
    result = run("prune", "random:0:2", "--target-ratio", "60", "--curves", curves, "-o", tmp_path / "t.pt", *training)
    assert result.exit_code == 0 and "measured: top-1 " in result.stderr, result.output
    assert "choose from measured curves" in one_error_line(run("prune", "random:0:2", "--target-ratio", "50", "-o", tmp_path / "x.pt"))
    assert "measured on another model" in one_error_line(
        run("compress", "random:0:2", "--arch", "resnet18", "--target-ratio", "20", "--curves", curves, "-o", tmp_path / "y.dcz")
    )
    assert "drop --sparsity" in one_error_line(
        run("compress", "random:0:2", "--target-ratio", "20", "--sparsity", "0.5", "--curves", curves)
    )
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "y.dcz").exists()


def test_coded_bytes_model_is_monotone():
    assert coded_bytes(10_000, 0.1, 4) < coded_bytes(10_000, 0.2, 4) < coded_bytes(10_000, 0.2, 6)
