"""safetensors in and out (single files, sharded checkpoints, pipes), half precision kept through every
stage, hostile safetensors headers, and models past the old 2**28-element cap."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from alexcompress.codec.container import DEFAULT_MAX_ELEMENTS, parse_header
from alexcompress.errors import ModelError
from alexcompress.models import safetensors
from alexcompress.models.dcz import decode_arrays, encode
from alexcompress.models.state import load_arrays, same_bits

CLI = [sys.executable, "-m", "alexcompress"]
BF16 = ml_dtypes.bfloat16
DTYPES = [np.float32, np.float64, np.float16, BF16, np.int64, np.int32, np.int16, np.int8, np.uint8, np.bool_]


def alexcompress(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, **kwargs)


def one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.decode().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("alexcompress: error: "), done.stderr
    return lines[0]


def transformer(seed: int = 0, layers: int = 3, width: int = 64) -> "OrderedDict[str, np.ndarray]":
    """A small transformer-shaped state dict in bfloat16 (embeddings, attention and MLP weights, norms)."""
    rng = np.random.default_rng(seed)
    state: OrderedDict[str, np.ndarray] = OrderedDict()
    state["embed.weight"] = rng.standard_normal((100, width)).astype(BF16)
    for i in range(layers):
        state[f"layers.{i}.attn.qkv.weight"] = (0.05 * rng.standard_normal((3 * width, width))).astype(BF16)
        state[f"layers.{i}.mlp.up.weight"] = (0.05 * rng.standard_normal((4 * width, width))).astype(BF16)
        state[f"layers.{i}.mlp.up.bias"] = rng.standard_normal(4 * width).astype(BF16)
        state[f"layers.{i}.norm.weight"] = np.ones(width, dtype=BF16)
    state["head.weight"] = (0.05 * rng.standard_normal((10, width))).astype(np.float16)
    return state


def write_sharded(folder: Path, state: "dict[str, np.ndarray]", shards: int) -> Path:
    names = list(state)
    files = {}
    for k in range(shards):
        part = names[k::shards]
        file = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        with open(folder / file, "wb") as handle:
            safetensors.write({n: state[n] for n in part}, handle)
        files.update(dict.fromkeys(part, file))
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": {n: files[n] for n in names}}))
    return index


def file_bytes(path: Path, state: "dict[str, np.ndarray]") -> None:
    with open(path, "wb") as handle:
        safetensors.write(state, handle)


# ------------------------------------------------------------------------------------------------ format


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(range(len(DTYPES))), st.lists(st.integers(0, 4), max_size=3)),
        min_size=1,
        max_size=6,
    ),
    st.integers(0, 2**32 - 1),
)
def test_write_then_read_is_the_identity_for_every_dtype_and_shape(specs, seed):
    rng = np.random.default_rng(seed)
    state = OrderedDict()
    for i, (d, shape) in enumerate(specs):
        raw = rng.integers(0, 256, size=int(np.prod(shape)) * np.dtype(DTYPES[d]).itemsize, dtype=np.uint8)
        array = raw.view(DTYPES[d]) if DTYPES[d] is not np.bool_ else (raw & 1).astype(np.bool_)
        state[f"t{i}"] = array.reshape(shape)
    buffer = io.BytesIO()
    safetensors.write(state, buffer)
    back = safetensors.loads(bytearray(buffer.getvalue()), "x")
    assert list(back) == list(state)
    assert all(same_bits(back[k], state[k]) for k in state)


def test_the_files_it_writes_are_what_torch_and_the_reference_layout_expect(tmp_path):
    state = transformer()
    file_bytes(tmp_path / "m.safetensors", state)
    data = (tmp_path / "m.safetensors").read_bytes()
    (length,) = struct.unpack_from("<Q", data)
    header = json.loads(data[8 : 8 + length])
    assert length % 8 == 0 and header["embed.weight"]["dtype"] == "BF16" and header["head.weight"]["dtype"] == "F16"
    begin, end = header["layers.0.mlp.up.weight"]["data_offsets"]
    raw = np.frombuffer(data[8 + length + begin : 8 + length + end], dtype=np.int16)
    expected = torch.from_numpy(state["layers.0.mlp.up.weight"].view(np.int16).copy()).view(torch.bfloat16)
    assert torch.equal(torch.from_numpy(raw.copy()).view(torch.bfloat16), expected.reshape(-1))


def hostile(header: object, data: bytes = b"", length: int | None = None) -> bytes:
    text = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return struct.pack("<Q", len(text) if length is None else length) + text + data


HOSTILE = {
    "offsets past the end": hostile({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, bytes(8)),
    "overlapping tensors": hostile(
        {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}},
        bytes(12),
    ),
    "a hole between tensors": hostile(
        {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}},
        bytes(12),
    ),
    "a huge declared shape": hostile({"w": {"dtype": "F32", "shape": [1 << 40, 1 << 40], "data_offsets": [0, 4]}}, bytes(4)),
    "a span that is not the shape": hostile({"w": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 4]}}, bytes(4)),
    "a header of 2**60 bytes": hostile({"w": 1}, length=1 << 60),
    "a header past the end": hostile({"w": 1}, length=4096),
    "nested 100,000 deep": hostile(b"{" + b'"a":[' * 100_000 + b"]" * 100_000 + b"}"),
    "not an object": hostile([1, 2, 3]),
    "an unknown dtype": hostile({"w": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}}, bytes(1)),
    "negative offsets": hostile({"w": {"dtype": "U8", "shape": [1], "data_offsets": [-1, 0]}}, bytes(1)),
    "trailing bytes": hostile({"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}, bytes(9)),
    "metadata that is not strings": hostile({"__metadata__": {"a": [1]}}),
    "more elements than --max-elements": hostile(
        {"w": {"dtype": "BOOL", "shape": [DEFAULT_MAX_ELEMENTS + 1], "data_offsets": [0, DEFAULT_MAX_ELEMENTS + 1]}}
    ),
    "not UTF-8": hostile(b'{"\xff": 1}'),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_safetensors_headers_are_refused_in_one_line(tmp_path, name):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(HOSTILE[name])
    with pytest.raises(ModelError) as info:
        load_arrays(str(path))
    assert "\n" not in str(info.value) and len(str(info.value)) < 400
    with pytest.raises(ModelError):
        safetensors.loads(bytearray(HOSTILE[name]), "<stdin>")


def test_hostile_headers_cost_no_memory_and_the_command_says_so(tmp_path):
    from .test_hostile import _peak_mb

    for name in ("a huge declared shape", "offsets past the end", "more elements than --max-elements"):
        path = tmp_path / "bad.safetensors"
        path.write_bytes(HOSTILE[name])
        code = f"from alexcompress.models.state import load_arrays\ntry:\n    load_arrays({str(path)!r})\nexcept Exception:\n    pass"
        assert _peak_mb(code) < 64, name
        line = one_error_line(alexcompress("compress", path, "-o", tmp_path / "x.dcz"))
        assert "bad.safetensors" in line and not (tmp_path / "x.dcz").exists()


# ------------------------------------------------------------------------------------------------ sharded


def test_a_sharded_checkpoint_compresses_to_the_bytes_of_the_single_file(tmp_path):
    state = transformer()
    index = write_sharded(tmp_path, state, 3)
    file_bytes(tmp_path / "single.safetensors", state)
    for name, source in (("sharded", index), ("single", tmp_path / "single.safetensors")):
        done = alexcompress("compress", source, "--sparsity", "0.5", "--bits", "4", "-o", tmp_path / f"{name}.dcz", "-q")
        assert done.returncode == 0, done.stderr
    assert (tmp_path / "sharded.dcz").read_bytes() == (tmp_path / "single.dcz").read_bytes()
    piped = subprocess.run(
        [*CLI, "compress", "-", "--sparsity", "0.5", "--bits", "4", "-o", "-", "-q"],
        input=(tmp_path / "single.safetensors").read_bytes(),
        capture_output=True,
    )
    assert piped.returncode == 0 and piped.stdout == (tmp_path / "single.dcz").read_bytes()


def test_decode_writes_a_sharded_checkpoint_that_reads_back_as_the_single_file(tmp_path):
    state = transformer()
    file_bytes(tmp_path / "single.safetensors", state)
    dcz = tmp_path / "m.dcz"
    assert alexcompress("compress", tmp_path / "single.safetensors", "--sparsity", "0.5", "--bits", "4", "-o", dcz, "-q").returncode == 0
    assert alexcompress("decode", dcz, "-o", tmp_path / "whole.safetensors", "-q").returncode == 0
    out = tmp_path / "out"
    out.mkdir()
    index = out / "model.safetensors.index.json"
    done = alexcompress("decode", dcz, "-o", index, "--shard-size", "40KB")
    assert done.returncode == 0, done.stderr
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert len(shards) > 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert all((out / name).stat().st_size <= 40_000 + 4096 for name in shards[:-1])  # a shard: 40 kB of tensors and its header
    whole, sharded = safetensors.load(str(tmp_path / "whole.safetensors")), safetensors.load_index(str(index))
    assert list(whole) == list(sharded) and all(same_bits(whole[k], sharded[k]) for k in whole)
    assert json.loads(index.read_text())["metadata"]["total_size"] == sum(v.nbytes for v in whole.values())
    # the shards are outputs like any other: an existing one is not replaced without --force, and nothing is written
    index.unlink()
    (out / shards[0]).write_bytes(b"precious")
    refused = alexcompress("decode", dcz, "-o", index, "--shard-size", "40KB")
    assert refused.returncode == 1 and one_error_line(refused).endswith(f"{shards[0]}: already exists; use --force to overwrite it")
    assert (out / shards[0]).read_bytes() == b"precious" and not index.exists()
    assert alexcompress("decode", dcz, "-o", index, "--shard-size", "40KB", "--force", "-q").returncode == 0
    assert list(safetensors.load_index(str(index))) == list(whole)


@pytest.mark.parametrize(
    "args, words",
    [
        (["--shard-size", "5XB"], "--shard-size must be a size such as 2GB, 500MiB or 4096 (bytes), got '5XB'"),
        (["--shard-size", "0"], "--shard-size must be at least 1 byte"),
    ],
)
def test_a_bad_shard_size_is_refused_in_one_line(tmp_path, args, words):
    dcz = tmp_path / "m.dcz"
    file_bytes(tmp_path / "m.safetensors", transformer())
    assert alexcompress("compress", tmp_path / "m.safetensors", "--sparsity", "0.5", "-o", dcz, "-q").returncode == 0
    done = alexcompress("decode", dcz, "-o", tmp_path / "x.safetensors.index.json", *args)
    assert done.returncode == 1 and words in one_error_line(done)
    refused = alexcompress("decode", dcz, "-o", tmp_path / "x.safetensors", "--shard-size", "1GB")
    assert refused.returncode == 1 and "only a sharded output" in one_error_line(refused)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.dcz", "m.safetensors"]


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda m: {**m, "layers.0.norm.weight": "../model-00001-of-00003.safetensors"}, "not a file name beside the index"),
        (lambda m: {k: v for k, v in m.items() if k != "embed.weight"}, "disagree"),
        (lambda m: {**m, "ghost.weight": "model-00001-of-00003.safetensors"}, "disagree"),
        (lambda m: {**m, "embed.weight": "missing.safetensors"}, "no such file"),
    ],
    ids=["a shard outside the folder", "a tensor the index leaves out", "a tensor no shard holds", "a missing shard"],
)
def test_an_index_that_disagrees_with_its_shards_is_refused(tmp_path, edit, words):
    index = write_sharded(tmp_path, transformer(), 3)
    record = json.loads(index.read_text())
    index.write_text(json.dumps({"weight_map": edit(record["weight_map"])}))
    line = one_error_line(alexcompress("compress", index, "-o", tmp_path / "x.dcz"))
    assert words in line.lower() and not (tmp_path / "x.dcz").exists()


# ------------------------------------------------------------------------------------------------ dtypes


def test_half_precision_comes_back_in_its_own_dtype_bit_for_bit_and_sizes_are_the_original_bytes(tmp_path):
    state = transformer()
    file_bytes(tmp_path / "m.safetensors", state)
    original = sum(a.nbytes for a in state.values())
    for how in ("compress", "staged"):
        target = tmp_path / f"{how}.dcz"
        if how == "compress":
            done = alexcompress("compress", tmp_path / "m.safetensors", "--sparsity", "0.6", "--bits", "4", "-o", target, "-q")
        else:
            done = subprocess.run(
                f"{' '.join(CLI)} prune {tmp_path / 'm.safetensors'} --sparsity 0.6 -o - -q | {' '.join(CLI)} quantize - --bits 4 -o - -q"
                f" | {' '.join(CLI)} encode - -o {target} -q",
                shell=True,
                capture_output=True,
            )
        assert done.returncode == 0, done.stderr
        header = parse_header(target.read_bytes())
        assert {t.name: t.dtype for t in header.tensors} == {k: str(v.dtype) for k, v in state.items()}
        from alexcompress.codec.accounting import original_bytes

        assert original_bytes(header) == original
        decoded, _ = decode_arrays(target.read_bytes())
        for key, value in state.items():
            assert decoded[key].dtype == value.dtype
            if value.ndim < 2:  # raw: bit for bit
                assert same_bits(decoded[key], value), key
            else:  # coded: at most 16 values, zeros where pruned, the original sign
                assert np.unique(decoded[key][decoded[key] != 0]).size <= 16
        done = alexcompress("decode", target, "-o", tmp_path / f"{how}.safetensors", "-q")
        assert done.returncode == 0, done.stderr
        back = safetensors.load(str(tmp_path / f"{how}.safetensors"))
        assert all(same_bits(back[k], decoded[k]) for k in state)
    assert (tmp_path / "compress.safetensors").read_bytes() == (tmp_path / "staged.safetensors").read_bytes()


def test_a_bfloat16_torchvision_model_keeps_its_dtype_and_runs_as_float32(tmp_path):
    from alexcompress import api
    from alexcompress.models.state import random_model
    from alexcompress.sources import read_model

    torch.save({k: v.to(torch.bfloat16) for k, v in random_model("alexnet", 10, 0).items()}, tmp_path / "m.pt")
    result = api.compress(read_model(str(tmp_path / "m.pt")), check=True)
    header = parse_header(result.data)
    assert {t.dtype for t in header.tensors} == {"bfloat16"}
    assert result.original_bytes == sum(t.numel for t in header.tensors) * 2
    (tmp_path / "m.dcz").write_bytes(result.data)
    model = api.load(tmp_path / "m.dcz")
    assert next(model.parameters()).dtype == torch.float32
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 10)


# ------------------------------------------------------------------------------------------------ size


def test_a_model_past_the_old_2_28_element_cap_round_trips():
    rng = np.random.default_rng(0)
    weight = np.zeros((1 << 14, (1 << 14) + 1), dtype=BF16)  # 268,451,840 elements: more than 2**28
    flat = weight.reshape(-1)
    flat[rng.choice(flat.size, 5000, replace=False)] = rng.choice(np.float32([-0.5, -0.25, 0.25, 0.5]), 5000).astype(BF16)
    state = OrderedDict([("big.weight", weight), ("big.bias", np.arange(3, dtype=np.float16))])
    data = encode(state, arch="none")
    assert len(data) < 1 << 20
    back, _ = decode_arrays(data)
    assert back["big.weight"].dtype == BF16 and np.array_equal(back["big.weight"].view(np.uint16), weight.view(np.uint16))
    del back


def test_max_elements_refuses_a_larger_file_before_any_work(tmp_path):
    done = alexcompress("compress", "random:0:10", "--sparsity", "0.5", "-o", tmp_path / "m.dcz", "-q")
    assert done.returncode == 0, done.stderr
    line = one_error_line(alexcompress("--max-elements", "1000", "info", tmp_path / "m.dcz"))
    assert "more than 1,000 elements" in line and "--max-elements" in line
    line = one_error_line(alexcompress("--max-elements", "1000", "compress", "random:0:10", "-o", tmp_path / "x.dcz"))
    assert "--max-elements" in line and not (tmp_path / "x.dcz").exists()
    assert alexcompress("--max-elements", str(10**8), "info", tmp_path / "m.dcz").returncode == 0


def test_the_command_line_default_is_the_container_s():
    import inspect

    from alexcompress.cli.app import _root

    assert inspect.signature(_root).parameters["max_elements"].default == DEFAULT_MAX_ELEMENTS


def test_the_coder_names_of_the_command_line_are_the_codec_s():
    from alexcompress.cli.options import CODER_NAMES
    from alexcompress.codec.encodings import CODERS

    assert CODER_NAMES == tuple(CODERS)


def test_help_imports_neither_numpy_nor_torch():
    code = "import sys\nfrom alexcompress.cli.app import app\nprint(sorted(m for m in ('numpy', 'torch') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr
