"""The torch-free `.pt` reader: exactly torch.load's arrays on plain state dicts, None for anything else."""

from __future__ import annotations

import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from alexcompress.errors import ModelError
from alexcompress.models.ptfile import read_state_dict


def test_matches_torch_load_including_views_and_dtypes(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = OrderedDict(
        plain=torch.randn(3, 5),
        transposed=base.t(),  # non-contiguous view of a shared storage
        slice=base[1:3, 2:],  # offset into the same storage
        half=torch.randn(4).half(),
        count=torch.tensor(7, dtype=torch.int64),
        flags=torch.tensor([True, False]),
        empty=torch.zeros(0, 3),
    )
    path = tmp_path / "s.pt"
    torch.save({"state_dict": state, "epoch": 3}, path)
    fast = read_state_dict(path)
    slow = torch.load(path, weights_only=True)
    assert fast["epoch"] == 3
    for key, tensor in slow["state_dict"].items():
        array = fast["state_dict"][key]
        assert array.dtype == tensor.numpy().dtype and array.shape == tuple(tensor.shape), key
        assert np.array_equal(array, tensor.numpy()), key


class _Evil:
    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def test_unusual_files_are_refused_or_left_to_torch_but_never_unpickled(tmp_path):
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    module = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), module)
    evil = _Evil()
    evil.target = str(tmp_path / "pwned")
    malicious = tmp_path / "evil.pt"
    torch.save({"x": evil}, malicious)
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(1000)}, good)
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes(good.read_bytes()[:-500])
    text = tmp_path / "text.pt"
    text.write_text("hello")
    for path in (module, malicious):  # bounded zip archives with foreign globals: torch's weights_only loader decides
        assert read_state_dict(path) is None, path.name
    for path, message in ((legacy, "legacy format"), (truncated, "truncated"), (text, "not a zip archive")):
        with pytest.raises(ModelError, match=message):
            read_state_dict(path)
    assert not (tmp_path / "pwned").exists()


def test_compress_of_a_pt_file_never_imports_torch(files, tmp_path):
    out = tmp_path / "m.dcz"
    script = (
        "import sys\nfrom alexcompress.cli.app import app\n"
        f"sys.argv = ['alexcompress', 'compress', {str(files['model'])!r}, '-o', {str(out)!r}, '-q', '--sparsity', '0.9', '--bits', '5']\n"
        "try:\n    app()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
    assert out.read_bytes()[:4] == b"\x89DCZ"


DTYPES = ["float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool"]


@settings(max_examples=40, deadline=None)
@given(
    shapes=st.lists(st.lists(st.integers(0, 5), min_size=0, max_size=4), min_size=1, max_size=5),
    dtypes=st.lists(st.sampled_from(DTYPES), min_size=5, max_size=5),
    transpose=st.booleans(),
)
def test_written_pt_is_what_torch_load_reads(tmp_path_factory, shapes, dtypes, transpose):
    """The torch-free writer against torch.load(weights_only=True), mmap too: dtypes, 0-d and empty tensors,
    non-contiguous input."""
    from alexcompress.models.ptfile import write_state_dict

    rng = np.random.default_rng(0)
    state = OrderedDict()
    for i, (shape, dtype) in enumerate(zip(shapes, dtypes)):
        array = (rng.normal(size=shape) * 100).astype(dtype)
        state[f"layer{i}.weight"] = array.T if transpose else array
    path = tmp_path_factory.mktemp("pt") / "w.pt"
    with open(path, "wb") as handle:
        write_state_dict(state, handle, {"": 1, "layer0": 2})
    for mmap in (False, True):
        loaded = torch.load(path, weights_only=True, mmap=mmap)
        assert list(loaded) == list(state) and loaded._metadata["layer0"] == {"version": 2}
        for key, array in state.items():
            assert loaded[key].numpy().dtype == array.dtype and loaded[key].numpy().shape == array.shape
            assert np.array_equal(loaded[key].numpy(), array), key
    again = read_state_dict(path)
    assert all(np.array_equal(again[k], v) for k, v in state.items())
