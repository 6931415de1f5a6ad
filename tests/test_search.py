"""The search (`compress --data ... --max-drop PP`, `api.search`): a file within its budget, a resumed search
equal to an unbroken one, its refusals, and the guard rails around validation sets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from alexcompress import api
from alexcompress.compression.search import SearchSpec
from alexcompress.compression.sensitivity import Curves, LayerCurve, warning
from alexcompress.models.state import build_model, random_model, save_state_dict
from alexcompress.train.config import TrainConfig
from alexcompress.train.data import Preprocessing, image_folder, shared_images, split_folder

from .reference import train_from_scratch
from .test_cli import one_error_line, run

ARCH = "resnet18"  # a fifth of AlexNet's weights, learns the toy task below in seconds
IMAGES = ["--image-size", "32", "--resize", "32", "--batch-size", "8", "--device", "cpu"]
PREP = Preprocessing(32, 32)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small model trained on a two-class image folder until it separates the classes (a random-init one
    scores chance everywhere, and every candidate would tie)."""
    root = tmp_path_factory.mktemp("search")
    data = separable_folder(root / "images")
    torch.manual_seed(0)
    model = build_model(random_model(ARCH, num_classes=2, seed=0), ARCH)
    train, _ = split_folder(str(data), PREP, "none", 0.25, seed=0)
    train_from_scratch(model, train, TrainConfig(epochs=4, lr=1e-3, optimizer="adam", batch_size=8, device="cpu"))
    base = root / "base.pt"
    with open(base, "wb") as handle:
        save_state_dict({k: v.detach() for k, v in model.state_dict().items()}, handle, ARCH)
    curves = root / "curves.json"  # a coarse grid: the search's own measurement is tested once, in the library
    done = run("sensitivity", base, "--data", data, "--val-fraction", "0.25", "--save", curves, *GRID, *IMAGES)
    assert done.exit_code == 0, done.output
    return root, data, base, curves


def separable_folder(root, per_class: int = 24):
    """Two classes of noise images, one darker than the other: learnt in a few epochs."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(2):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = (rng.random((32, 32, 3)) * 128 + 100 * c).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i}.png")
    return root


GRID = ["--keep-grid", "1,0.3,0.1", "--bits-grid", "4,2"]


def training(data, epochs: int = 1) -> api.Training:
    train, validation = split_folder(str(data), PREP, "none", 0.25, seed=0)
    config = TrainConfig(epochs=epochs, lr=1e-4, optimizer="adam", batch_size=8, device="cpu")
    return api.Training(train, config, validation)


SMALL = SearchSpec(max_drop=0.0, rungs=2, rate_weights=(0.002,), widen=(1,), keep_grid=(1, 0.3, 0.1), bits_grid=(4, 2))  # two files a rung


def test_the_search_returns_a_file_within_its_budget_on_validation(trained, tmp_path):
    """Through the command: the file written scores, on the validation images the search held out, within
    --max-drop of the model as given (measured here again, from the file, by `api.evaluate`)."""
    root, data, base, curves = trained
    out = tmp_path / "m.dcz"
    plot = tmp_path / "search.png"
    done = run(
        "compress",
        base,
        "-o",
        out,
        "--data",
        data,
        "--val-fraction",
        "0.25",
        "--max-drop",
        "0",
        "--epochs",
        "1",
        "--rungs",
        "2",
        "--curves",
        curves,
        "--plot",
        plot,
        "--verify",
        *IMAGES,
    )
    assert done.exit_code == 0, done.output
    assert "<- chosen" in done.stderr and "after centroid fine-tuning" in done.stderr
    assert "verified: every file the search wrote decodes bit for bit" in done.stderr
    assert plot.stat().st_size > 0 and not (tmp_path / "m.dcz.search").exists()  # the work folder goes on success
    validation = api.held_out(str(data), PREP, 0.25, 0)
    before = api.evaluate(api.inference_model(str(base)), validation, batch_size=8, device="cpu")
    after = api.evaluate(api.inference_model(str(out)), validation, batch_size=8, device="cpu")
    assert after.top1 >= before.top1 and before.top1 > 0.6  # a model that learnt something, and kept it
    assert out.stat().st_size * 10 < base.stat().st_size


def test_a_resumed_search_equals_an_unbroken_one(trained, tmp_path):
    """Interrupted (Ctrl-C) at rung 2's first file, then resumed: byte for byte the file of a search that
    was not interrupted, and the steps already done (curves, both rungs' retraining, rung 1's files) are
    not done again."""
    root, data, base, curves = trained
    seen = []

    def interrupt(candidate):
        seen.append(candidate)
        if candidate.rung == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # this one measures its own curves
        api.search(api.read_model(str(base)), training(data), SMALL, tmp_path / "b", events=api.Events(candidate=interrupt))
    record = json.loads((tmp_path / "b" / "search.json").read_text())
    assert [len(r["candidates"]) for r in record["rungs"]] == [2, 1] and record["curves"]
    notes, again = [], []
    resumed = api.search(
        api.read_model(str(base)),
        training(data),
        SMALL,
        tmp_path / "b",
        resume=True,
        events=api.Events(note=notes.append, candidate=again.append),
    )
    assert [c.label for c in again] == ["ECSQ +1, rate weight 0.002"]  # only what was left of rung 2
    assert any("curves from the work folder" in n for n in notes) and not any("retraining" in n for n in notes)
    unbroken = api.search(api.read_model(str(base)), training(data), SMALL, tmp_path / "a", curves=resumed.curves)
    assert resumed.data == unbroken.data
    assert [asdict_of(c) for c in resumed.candidates] == [asdict_of(c) for c in unbroken.candidates]
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def asdict_of(candidate):
    from dataclasses import asdict

    return asdict(candidate)


def test_a_resumed_search_refuses_other_settings(trained, tmp_path):
    root, data, base, curves = trained
    work = tmp_path / "w"
    from alexcompress.compression.sensitivity import read_curves

    with pytest.raises(KeyboardInterrupt):
        api.search(
            api.read_model(str(base)),
            training(data),
            SMALL,
            work,
            curves=read_curves(curves),
            events=api.Events(candidate=lambda c: _raise()),
        )
    other = SearchSpec(max_drop=0.0, rungs=2, rate_weights=(0.004,), widen=(1,), keep_grid=(1, 0.3, 0.1), bits_grid=(4, 2))
    with pytest.raises(api.AlexCompressError, match="other settings \\(search differ\\)"):
        api.search(api.read_model(str(base)), training(data), other, work, resume=True)
    with pytest.raises(api.AlexCompressError, match="already exists: --resume continues it"):
        api.search(api.read_model(str(base)), training(data), SMALL, work)


def _raise():
    raise KeyboardInterrupt


def test_the_search_refuses_what_it_cannot_do(trained, tmp_path):
    root, data, base, curves = trained
    out = ["-o", tmp_path / "x.dcz"]
    cases = {
        "give --val DIR or --val-fraction F": ("--data", data, "--max-drop", "1"),
        "searches the keep rates": ("--data", data, "--val-fraction", "0.25", "--max-drop", "1", "--rates", "classifier.0=0.1"),
        "chooses the widths and the quantizer": ("--data", data, "--val-fraction", "0.25", "--max-drop", "1", "--bits", "4"),
        "needs --max-drop or --target-ratio": ("--data", data, "--val-fraction", "0.25"),
        "--plot draws the search's candidates": ("--plot", tmp_path / "p.png"),
        "no work folder to resume": ("--data", data, "--val-fraction", "0.25", "--max-drop", "1", "--resume"),
        "is inside": ("--data", data, "--val-fraction", "0.25", "--max-drop", "1", "--checkpoint", data / "w"),
    }
    for message, args in cases.items():
        line = one_error_line(run("compress", base, *out, *args, *IMAGES))
        assert message in line, (message, line)
    (tmp_path / "x.dcz.search").mkdir()
    line = one_error_line(run("compress", base, *out, "--data", data, "--val-fraction", "0.25", "--max-drop", "1", *IMAGES))
    assert "a work folder already exists: --resume continues it" in line
    assert not (tmp_path / "x.dcz").exists()


def test_validation_images_that_are_training_images_are_warned_of(trained, tmp_path):
    root, data, base, curves = trained
    assert shared_images(image_folder(str(data), PREP), image_folder(str(data), PREP)) == (48, 48)
    train, validation = split_folder(str(data), PREP, "none", 0.25, seed=0)
    assert shared_images(train, validation) == (0, 12)
    copy = tmp_path / "copy"
    separable_folder(copy)  # the same pixels, other files
    assert shared_images(image_folder(str(data), PREP), image_folder(str(copy), PREP))[0] == 48
    done = run("prune", base, "-o", tmp_path / "p.pt", "--sparsity", "0.5", "--data", data, "--val", copy, "--epochs", "1", *IMAGES)
    assert done.exit_code == 0, done.output
    assert "warning: 48 of 48 validation images are also training images" in done.stderr


def test_sensitivity_splits_the_stages_validation_images_and_warns_of_curves_at_100_percent(trained, tmp_path):
    root, data, base, curves = trained
    held = api.held_out(str(data), PREP, 0.25, 3)
    assert held.indices == split_folder(str(data), PREP, "none", 0.25, seed=3)[1].indices
    saved = tmp_path / "c.json"
    done = run(
        "sensitivity",
        base,
        "--data",
        data,
        "--val-fraction",
        "0.25",
        "--seed",
        "3",
        "--save",
        saved,
        "--keep-grid",
        "1,0.5",
        "--bits-grid",
        "8",
        *IMAGES,
    )
    assert done.exit_code == 0, done.output
    assert json.loads(saved.read_text())["samples"] == len(held)
    flat = Curves(ARCH, 1.0, 100, [LayerCurve("w", "w", 10, 10, {1.0: 1.0, 0.5: 1.0}, {8: 1.0, 2: 1.0})])
    assert "images the model was trained on?" in warning(flat)
    flat.layers[0].bits[2] = 0.5
    flat.layers[0].keep[0.5] = 0.9
    assert warning(flat) is None and warning(Curves(ARCH, 0.98, 100, flat.layers)) is None


def test_quantize_names_the_quantizer_it_ran(tmp_path):
    model = tmp_path / "m.pt"
    assert run("init", "-o", model, "--num-classes", "2", "--arch", ARCH).exit_code == 0
    done = run("quantize", model, "-o", tmp_path / "q.pt", "--quantizer", "ecsq", "--rate-weight", "0.002", "--bits", "4")
    assert done.exit_code == 0 and "quantization: per-layer ECSQ (rate weight 0.002)" in done.stderr
    assert "k-means" not in done.stderr


def test_the_search_spec_is_checked():
    for spec, message in (
        (SearchSpec(), "needs --max-drop or --target-ratio"),
        (SearchSpec(max_drop=1, target_ratio=10), "needs --max-drop or --target-ratio"),
        (SearchSpec(max_drop=-1), "max_drop"),
        (SearchSpec(target_ratio=0.5), "above 1"),
        (SearchSpec(max_drop=1, rungs=0), "rungs"),
    ):
        with pytest.raises(api.AlexCompressError, match=message):
            spec.check()
    SearchSpec(target_ratio=20).check()  # one of the two: accepted
    SearchSpec(max_drop=0).check()


@pytest.mark.parametrize(
    "text, message",
    [
        ("[" * 100_000 + "]" * 100_000, "not a search record"),
        ('{"format": "alexcompress-search-1", "rungs": {}}', "not a search record written by this version"),
        ("\x00" * 100, "not a search record"),
        ("x" * (1 << 25), "larger than"),
    ],
)
def test_a_hostile_work_folder_is_refused_in_one_line(tmp_path, text, message):
    from alexcompress.compression.search import Work

    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "search.json").write_text(text)
    with pytest.raises(api.AlexCompressError, match=message):
        Work(tmp_path / "w").open({"model": "x"}, resume=True)


def test_an_edited_rung_is_refused_in_one_line():
    from alexcompress.compression.search import _rung_of

    good = {"index": 1, "rates": {"w": 0.5}, "bits": {"w": 4}, "predicted_ratio": 9.5, "trained": True, "candidates": [], "parent": 0}
    assert _rung_of(good, "s.json").index == 1
    for bad in ({**good, "index": "1"}, {**good, "bits": {"w": "4"}}, {**good, "evil": 1}, {**good, "candidates": [{"rung": 1}]}, []):
        with pytest.raises(api.AlexCompressError, match="s.json: not a search record written by this version"):
            _rung_of(bad, "s.json")


def test_the_climb_doubles_then_bisects_after_a_failure():
    from alexcompress.compression.search import Candidate, Rung, _step

    def rung(index, parent, ratio, drop):
        candidate = Candidate(index, "k-means +0", "kmeans", {}, 0.0, 100, ratio, 0.9, 0.1, drop)
        return Rung(index, {}, {}, ratio, True, [candidate], parent)

    spec = SearchSpec(max_drop=0.5)
    one, two = rung(1, 0, 20.0, 0.0), rung(2, 1, 40.0, 0.0)
    assert _step([one], [one], spec) == 2.0  # room to spare: x2
    assert _step([one, two], [one, two], spec) == 2.0
    three = rung(3, 2, 80.0, 3.0)  # failed: the square root of its step
    assert _step([one, two, three], [one, two], spec) == pytest.approx(2**0.5)
    four = rung(4, 2, 56.6, 0.4)  # passed with little room: at most x1.4
    assert _step([one, two, three, four], [one, two, four], spec) == pytest.approx(1.4)
    assert _step([rung(1, 0, 20.0, 0.4)], [rung(1, 0, 20.0, 0.4)], spec) == 1.4


def test_compress_refuses_the_search_options_without_data(tmp_path):
    from alexcompress.cli import stages
    from alexcompress.compression import search

    assert stages.MAX_RUNGS == search.MAX_RUNGS
    for args, flags in (
        (("--epochs", "3"), "--epochs"),
        (("--val", tmp_path), "--val"),
        (("--rungs", "2", "--image-size", "64"), "--image-size, --rungs"),
    ):
        line = one_error_line(run("compress", "random:0:2", "-o", tmp_path / "x.dcz", "--sparsity", "0.5", *args))
        assert f"{flags}: the search's options; give --data" in line, line


def test_the_search_runs_under_torchrun(trained, tmp_path):
    """Two ranks (gloo, CPU): one file written, by rank 0, the work folder gone, one table printed."""
    from .test_distributed import torchrun

    root, data, base, curves = trained
    out = tmp_path / "m.dcz"
    args = ["--data", data, "--val-fraction", "0.25", "--max-drop", "0", "--epochs", "1", "--rungs", "1", "--curves", curves]
    done = torchrun(2, "-m", "alexcompress", "compress", base, "-o", out, *args, "--log-every", "1000", *IMAGES)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("<- chosen") == 1 and out.stat().st_size > 0 and not (tmp_path / "m.dcz.search").exists()
    single = torchrun(2, "-m", "alexcompress", "compress", base, "-o", tmp_path / "x.dcz", "--sparsity", "0.5")
    assert single.returncode == 1 and "under torchrun compress runs only its search (--data)" in single.stderr
    assert not (tmp_path / "x.dcz").exists()


def test_the_overlap_check_never_opens_a_fifo(tmp_path):
    """A FIFO among the images (in both sets) would block a hash forever: only regular files are read."""
    import os

    for name in ("train", "val"):
        (tmp_path / name / "a").mkdir(parents=True)
        os.mkfifo(tmp_path / name / "a" / "0.png")
    train, val = image_folder(str(tmp_path / "train"), PREP), image_folder(str(tmp_path / "val"), PREP)
    assert shared_images(train, val) == (0, 1)
