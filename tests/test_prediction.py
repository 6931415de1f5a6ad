"""`predict` and `eval --sparse`: what the user sees, exit codes, files that are not images, real pipes."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from alexcompress.errors import AlexCompressError
from alexcompress.runtime.predict import class_names, expand_images

from .test_cli import one_error_line, run
from .test_train import make_image_folder

SMALL = ["--image-size", "64", "--resize", "64", "--device", "cpu"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    data = make_image_folder(root / "images", classes=3, per_class=2)
    model = root / "m.dcz"
    assert run("compress", "random:0:3", "-o", model, "--sparsity", "0.9", "-q").exit_code == 0
    (root / "broken.png").write_bytes(b"not an image")
    return root, data, model


def _predictions(stdout: str) -> dict[str, list[tuple[float, str]]]:
    """{image: [(probability, label), ...]} from predict's output."""
    out: dict[str, list[tuple[float, str]]] = {}
    current = None
    for line in stdout.splitlines():
        match = re.fullmatch(r"\s+(\d+\.\d+)%\s+(.*)", line)
        if match:
            out[current].append((float(match.group(1)), match.group(2)))
        else:
            current = line
            out[current] = []
    return out


def test_predict_prints_topk_and_reports_bad_files_but_goes_on(setup):
    root, data, model = setup
    good = [data / "class0" / "0.png", data / "class1" / "1.png"]
    result = run("predict", model, good[0], root / "broken.png", root / "missing.png", good[1], "--topk", "2", *SMALL)
    assert result.exit_code == 1
    found = _predictions(result.stdout)
    assert list(found) == [str(p) for p in good]
    for rows in found.values():
        assert len(rows) == 2 and rows[0][0] >= rows[1][0] and all(re.fullmatch(r"class [0-2]", label) for _, label in rows)
    errors = [line for line in result.stderr.splitlines() if line.startswith("alexcompress: error: ")]
    assert errors == [
        f"alexcompress: error: {root / 'broken.png'}: not a readable image (cannot identify image file '{root / 'broken.png'}')",
        f"alexcompress: error: {root / 'missing.png'}: no such file",
        "alexcompress: error: 2 of 4 images could not be read (each reported above)",
    ]
    assert "sparse runtime: 8 layers run compressed" in result.stderr


def test_predict_sparse_and_dense_agree_on_folders_globs_and_names(setup):
    root, data, model = setup
    names = root / "names.txt"
    names.write_text("cat\ndog\nbird\n")
    outputs = []
    for mode in ("--sparse", "--dense"):
        result = run("predict", model, data, "--topk", "3", "--classes", names, mode, "--batch-size", "4", *SMALL)
        assert result.exit_code == 0, result.output
        outputs.append(_predictions(result.stdout))
    sparse, dense = outputs
    assert len(sparse) == 6 and list(sparse) == list(dense)
    for image in sparse:
        assert [label for _, label in sparse[image]] == [label for _, label in dense[image]]
        assert {label.split(" (")[0] for _, label in sparse[image]} == {"cat", "dog", "bird"}
        for (a, _), (b, _) in zip(sparse[image], dense[image]):
            assert abs(a - b) < 1e-3
    result = run("predict", model, str(data / "class1" / "*.png"), "--topk", "1", "--classes", data, *SMALL)
    assert result.exit_code == 0 and len(_predictions(result.stdout)) == 2
    assert re.search(r"%  class[0-2] \([0-2]\)\n", result.stdout)  # folder names as class names


def test_predict_usage_errors(setup, tmp_path):
    root, data, model = setup
    assert "no file matches this pattern" in one_error_line(run("predict", model, str(tmp_path / "*.png"), *SMALL))
    (tmp_path / "empty").mkdir()
    assert "a folder with no image files" in one_error_line(run("predict", model, tmp_path / "empty", *SMALL))
    bad = tmp_path / "two.txt"
    bad.write_text("a\nb\n")
    assert "2 class names for a model with 3 outputs" in one_error_line(run("predict", model, data, "--classes", bad, *SMALL))
    assert "--topk must be" in one_error_line(run("predict", model, data, "--topk", "0", *SMALL), code=1)
    pt = tmp_path / "m.pt"
    assert run("decode", model, "-o", pt, "-q").exit_code == 0
    assert "runs a .dcz file, and this is a .pt" in one_error_line(run("predict", pt, data, "--sparse", *SMALL))
    assert "a model keyword is dense" in one_error_line(run("predict", "random:0:3", data, "--sparse", *SMALL))
    assert run("predict", pt, data, *SMALL).exit_code == 0  # a .pt runs dense by default


def test_predict_reads_image_paths_from_a_real_pipe(setup):
    root, data, model = setup
    listing = "\n".join(str(p) for p in sorted((data / "class2").glob("*.png"))) + "\n"
    done = subprocess.run(
        [sys.executable, "-m", "alexcompress", "predict", str(model), "-", "--topk", "1", *SMALL],
        input=listing.encode(),
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert list(_predictions(done.stdout.decode())) == listing.split()
    done = subprocess.run([sys.executable, "-m", "alexcompress", "predict", "-", "-", *SMALL], input=b"", capture_output=True, timeout=300)
    assert done.returncode == 1 and done.stderr.decode().strip() == "alexcompress: error: MODEL and IMAGE cannot both be '-' (stdin)"


def test_eval_sparse_equals_dense(setup):
    _, data, model = setup
    lines = []
    for mode in ("--sparse", "--dense"):
        result = run("eval", model, "--data", data, mode, "--batch-size", "4", *SMALL)
        assert result.exit_code == 0, result.output
        lines.append(result.stdout)
    assert lines[0] == lines[1] and "(6 images, 3 classes)" in lines[0]


def test_class_names_and_expansion(tmp_path):
    assert class_names(10) is None
    imagenet = class_names(1000)
    assert len(imagenet) == 1000 and imagenet[0] == "tench"
    with pytest.raises(AlexCompressError, match="nope.txt: no such file"):
        class_names(3, str(tmp_path / "nope.txt"))
    assert expand_images([str(tmp_path / "missing.png")]) == [str(tmp_path / "missing.png")]  # reported when predicted


def test_every_walk_stops_at_the_entry_cap(tmp_path, monkeypatch):
    """A --data tree, a folder and a glob given to predict: each walk counts the entries it looks at and stops
    with one line past fileio.MAX_WALK_ENTRIES (lowered here to 5; 10 million in use)."""
    import alexcompress.fileio as fileio
    from alexcompress.train.data import Preprocessing, image_folder

    for i in range(8):
        (tmp_path / "tree" / "a").mkdir(parents=True, exist_ok=True)
        (tmp_path / "tree" / "a" / f"{i}.png").write_bytes(b"")
    monkeypatch.setattr(fileio, "MAX_WALK_ENTRIES", 5)
    for walk in (
        lambda: image_folder(str(tmp_path / "tree"), Preprocessing()),
        lambda: expand_images([str(tmp_path / "tree")]),
        lambda: expand_images([str(tmp_path / "tree" / "**" / "*.png")]),
    ):
        with pytest.raises(AlexCompressError, match="the walk passed 5 entries; name a narrower folder"):
            walk()
