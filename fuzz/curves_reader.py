"""Coverage-guided fuzzing of the sensitivity-curves reader (`prune/compress --curves`) with atheris. Every
input must end in Curves or an AlexCompressError naming the file; anything else - another exception (a
RecursionError, an OverflowError), a crash, a hang, memory past -rss_limit_mb - is a finding.

    pip install atheris
    python fuzz/curves_reader.py fuzz/corpus-curves -max_total_time=1800 -rss_limit_mb=2048
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

with atheris.instrument_imports(include=["alexcompress"]):
    from alexcompress.compression.sensitivity import Curves
    from alexcompress.errors import AlexCompressError


def one_input(data: bytes) -> None:
    try:
        Curves.from_json(data, "fuzz.json")
    except AlexCompressError:
        pass


def main() -> None:
    from fuzz.seeds import curves_seeds, fuzz

    fuzz(one_input, curves_seeds)


if __name__ == "__main__":
    main()
