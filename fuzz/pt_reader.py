"""Coverage-guided fuzzing of the `.pt` reader (zip layout, pickle pre-scan, storages, strides) with atheris.
Every input must end in a state dict or a ModelError; anything else - another exception, a crash, a hang,
memory past -rss_limit_mb - is a finding. torch is never imported: the fuzzed path is the one `compress`,
`prune`, `quantize` and `encode` take for every zip file.

    pip install atheris
    python fuzz/pt_reader.py fuzz/corpus-pt -max_total_time=1800 -rss_limit_mb=2048
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

with atheris.instrument_imports(include=["alexcompress"]):
    from alexcompress.errors import AlexCompressError
    from alexcompress.models.ptfile import read_state_dict


def wrap(pickle_bytes: bytes) -> bytes:
    """The fuzzed bytes as the data.pkl of an otherwise valid archive with two storage records: mutations
    reach the pickle pre-scan, the unpickler and the tensor rebuilding instead of dying at a zip CRC."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", pickle_bytes)
        archive.writestr("archive/data/0", bytes(range(256)) * 4)
        archive.writestr("archive/data/1", bytes(64))
        archive.writestr("archive/version", b"3\n")
    return buffer.getvalue()


def one_input(data: bytes) -> None:
    """First byte even: the input is a whole file; odd: the rest is a data.pkl inside a valid archive."""
    if not data:
        return
    source = data[1:] if data[0] % 2 == 0 else wrap(data[1:])
    try:
        read_state_dict(source)
    except AlexCompressError:
        pass


def main() -> None:
    from fuzz.seeds import fuzz, pickle_of, pt_seeds

    fuzz(one_input, lambda: [b"\x00" + s for s in pt_seeds()] + [b"\x01" + pickle_of(s) for s in pt_seeds()])


if __name__ == "__main__":
    main()
