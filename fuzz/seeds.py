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
        result = alexcompress.compress(
            small_state(seed),
            arch="none",
            pruning=alexcompress.PruneSpec(sparsity=sparsity),
            quantization=alexcompress.QuantizeSpec(bits=bits),
        )
        seeds.append(result.data)
    return seeds


def pt_seeds() -> list[bytes]:
    from alexcompress.ptfile import write_state_dict

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
