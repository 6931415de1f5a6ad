"""Seed inputs for the coverage-guided fuzzers: small real files written by the tool itself (a coded model of
no known architecture, an AlexNet-shaped one, their `.pt` forms), so the fuzzers start inside the formats."""

from __future__ import annotations

import io
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np


def small_state(seed: int = 0) -> "OrderedDict[str, np.ndarray]":
    rng = np.random.default_rng(seed)
    state = OrderedDict()
    state["conv.weight"] = rng.normal(size=(6, 3, 3, 3)).astype(np.float32)
    state["conv.bias"] = rng.normal(size=6).astype(np.float32)
    state["fc.weight"] = rng.normal(size=(4, 30)).astype(np.float32)
    state["norm.num_batches_tracked"] = np.array(3, dtype=np.int64)
    return state


def dcz_seeds() -> list[bytes]:
    import alexcompress

    seeds = []
    for seed, sparsity, bits in ((0, 0.5, 3), (1, 0.9, 2), (2, 0.0, 1)):
        for coder in ("huffman", "context"):  # every coded encoding: sparse and dense, Huffman and rANS
            result = alexcompress.compress(
                small_state(seed),
                arch="none",
                pruning=alexcompress.PruneSpec(sparsity=sparsity),
                quantization=alexcompress.QuantizeSpec(bits=bits),
                coder=coder,
            )
            seeds.append(result.data)
    for coder in ("huffman", "context"):  # a forced index width: the sparse layouts
        seeds.append(
            alexcompress.compress(small_state(1), arch="none", pruning=alexcompress.PruneSpec(sparsity=0.7), index_bits=2, coder=coder).data
        )
    import ml_dtypes

    from alexcompress.models.dcz import encode

    half = OrderedDict((k, v.astype(ml_dtypes.bfloat16) if v.dtype == np.float32 else v) for k, v in small_state(2).items())
    rng = np.random.default_rng(3)
    half["big.weight"] = rng.normal(0, 0.02, (20, 30)).astype(ml_dtypes.bfloat16)  # not quantized: float_huffman
    half["big.bias"] = rng.normal(0, 0.02, 100).astype(np.float32)  # raw, float_huffman when smaller
    seeds.append(encode(half, arch="none", lossless=True))
    return seeds


def safetensors_seeds() -> list[bytes]:
    import ml_dtypes

    from alexcompress.models import safetensors

    seeds = []
    for seed in range(2):
        state = small_state(seed)
        state["half.weight"] = state["fc.weight"].astype(ml_dtypes.bfloat16)
        state["empty"] = np.zeros((0, 3), dtype=np.float16)
        buffer = io.BytesIO()
        safetensors.write(state, buffer, {"format": "pt"} if seed else None)
        seeds.append(buffer.getvalue())
    return seeds


def pt_seeds() -> list[bytes]:
    from alexcompress.models.ptfile import write_state_dict

    seeds = []
    for seed in range(2):
        buffer = io.BytesIO()
        write_state_dict(small_state(seed), buffer, {"": 1, "norm": 2})
        seeds.append(buffer.getvalue())
    return seeds


def write(directory: Path, seeds: list[bytes]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(seeds):
        (directory / f"seed{i}").write_bytes(data)


def pickle_of(pt: bytes) -> bytes:
    """The data.pkl record of a `.pt` file image."""
    import zipfile

    with zipfile.ZipFile(io.BytesIO(pt)) as archive:
        return archive.read(next(n for n in archive.namelist() if n.endswith("/data.pkl")))


def fuzz(one_input: Callable[[bytes], None], seeds: Callable[[], list[bytes]]) -> None:
    """Seed the corpus directory named on the command line (when it is empty) with `seeds()`, then run
    atheris on `one_input` with the command line's libFuzzer flags."""
    import sys

    import atheris

    corpus = next((Path(a) for a in sys.argv[1:] if not a.startswith("-")), None)
    if corpus is not None and not (corpus.exists() and any(corpus.iterdir())):
        write(corpus, seeds())
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


def curves_seeds() -> list[bytes]:
    """A curves file of each format version, as `sensitivity --save` writes them."""
    from alexcompress.compression.sensitivity import FORMATS, Curves, LayerCurve

    layers = [
        LayerCurve("conv.weight", "conv", 162, 162, {1.0: 0.9, 0.5: 0.85, 0.1: 0.4}, {8: 0.9, 4: 0.88, 2: 0.5}),
        LayerCurve("fc.weight", "fc", 120, 120, {1.0: 0.9, 0.2: 0.7}, {8: 0.9, 3: 0.8}, {1.0: 0.0, 0.2: 0.1}, {8: 0.0, 3: 0.02}),
    ]
    text = Curves("none", 0.9, 100, layers, 64, 1.5).to_json()
    return [text.encode(), text.replace(FORMATS[-1], FORMATS[0]).encode()]


def checkpoint_seeds() -> list[bytes]:
    """Checkpoints of both stages as training writes them (a small model, one step of state)."""
    import torch

    state = {k: torch.from_numpy(v) for k, v in small_state().items() if v.ndim}
    common = {"format": "alexcompress-checkpoint", "epoch": 1, "batch": 2, "world": 1, "stale": 0, "model": state}
    common |= {"optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1, 2]}]}, "rng": [torch.get_rng_state()]}
    seeds = []
    for stage, extra in (
        ("retrain", {"round": 1, "masks": {"fc.weight": state["fc.weight"] != 0}}),
        (
            "centroids",
            {"assignments": {"fc.weight": (torch.arange(3), torch.zeros(3, dtype=torch.long))}, "centroids": {"fc.weight": torch.ones(1)}},
        ),
    ):
        buffer = io.BytesIO()
        torch.save({**common, "stage": stage, **extra}, buffer)
        seeds.append(buffer.getvalue())
    return seeds


def image_seeds() -> list[bytes]:
    """Small images in the formats ImageFolder lists (PNG, JPEG, BMP, PPM, TIFF, WebP), grey and colour."""
    from PIL import Image

    seeds = []
    for mode, size in (("RGB", (8, 6)), ("L", (5, 5)), ("P", (3, 9))):
        image = Image.new(mode, size, 7)
        for fmt in ("PNG", "JPEG", "BMP", "PPM", "TIFF", "WEBP"):
            if fmt == "JPEG" and mode == "P":
                continue
            buffer = io.BytesIO()
            try:
                image.save(buffer, format=fmt)
            except OSError:  # a mode the format cannot hold
                continue
            seeds.append(buffer.getvalue())
    return seeds
