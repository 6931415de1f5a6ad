"""Coverage-guided fuzzing of the training-checkpoint reader (`prune/quantize --resume`) with atheris: the
`.pt` bounds (`ptfile.check_archive`), torch's weights-only unpickler, then the checks of every field a
resume reads. Every input must end in a checked checkpoint or an AlexCompressError; anything else is a
finding. First byte even: a whole file; odd: the rest is the data.pkl of an otherwise valid checkpoint.

    pip install atheris
    python fuzz/checkpoint_reader.py fuzz/corpus-checkpoint -max_total_time=1800 -rss_limit_mb=2048
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

with atheris.instrument_imports(include=["alexcompress"]):
    from alexcompress.errors import AlexCompressError
    from alexcompress.train.checkpoint import _check_checkpoint_fields, load_checkpoint

from fuzz.pt_reader import wrap  # noqa: E402

PATH = os.path.join(tempfile.mkdtemp(prefix="fuzz-checkpoint-"), "c.ckpt")


def one_input(data: bytes) -> None:
    if not data:
        return
    with open(PATH, "wb") as handle:
        handle.write(data[1:] if data[0] % 2 == 0 else wrap(data[1:]))
    try:
        ckpt = load_checkpoint(PATH)
        if isinstance(ckpt, dict):
            _check_checkpoint_fields(ckpt, PATH, "retrain")
    except AlexCompressError:
        pass


def main() -> None:
    from fuzz.seeds import checkpoint_seeds, fuzz, pickle_of

    fuzz(one_input, lambda: [b"\x00" + s for s in checkpoint_seeds()] + [b"\x01" + pickle_of(s) for s in checkpoint_seeds()])


if __name__ == "__main__":
    main()
