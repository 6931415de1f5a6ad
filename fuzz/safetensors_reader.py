"""Coverage-guided fuzzing of the safetensors reader (header length, JSON, dtypes, shapes, offsets, the
element limit) with atheris. Every input must end in a state dict of arrays whose bytes lie inside the input,
or a ModelError; anything else - another exception, a crash, a hang, memory past -rss_limit_mb - is a
finding. torch is never imported.

    pip install atheris
    python fuzz/safetensors_reader.py fuzz/corpus-safetensors -max_total_time=1800 -rss_limit_mb=2048
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

with atheris.instrument_imports(include=["alexcompress"]):
    from alexcompress.errors import AlexCompressError
    from alexcompress.models import safetensors


def one_input(data: bytes) -> None:
    try:
        state = safetensors.loads(bytearray(data), "fuzzed")
    except AlexCompressError:
        return
    if sum(array.nbytes for array in state.values()) > len(data):  # every tensor a view of the input
        raise AssertionError("tensors hold more bytes than the file")


def main() -> None:
    from fuzz.seeds import fuzz, safetensors_seeds

    fuzz(one_input, safetensors_seeds)


if __name__ == "__main__":
    main()
