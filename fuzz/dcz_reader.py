"""Coverage-guided fuzzing of the `.dcz` reader (header, layout, Huffman tables and streams, gaps) with
atheris. Every input must end in a decoded state dict or a DczError/ModelError; anything else - another
exception, a crash, a hang, memory past libFuzzer's -rss_limit_mb - is a finding.

    pip install atheris
    python fuzz/dcz_reader.py fuzz/corpus-dcz -max_total_time=1800 -rss_limit_mb=2048

The corpus directory is seeded with real files on first use. Findings go into tests/test_fuzz_findings.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

with atheris.instrument_imports(include=["alexcompress"]):
    from alexcompress.errors import AlexCompressError
    from alexcompress.models.dcz import decode_arrays


def resign(data: bytes) -> bytes:
    """Fix the header CRC and, where the header parses, every section CRC: mutations then reach the field
    checks, the code tables and the Huffman and gap decoders instead of dying at a checksum."""
    import json
    import zlib

    from alexcompress.codec.container import PREAMBLE

    if len(data) < PREAMBLE.size:
        return data
    magic, version, flags, length, _ = PREAMBLE.unpack_from(data)
    raw = data[PREAMBLE.size : PREAMBLE.size + length]
    body = bytearray(data[PREAMBLE.size + length :])
    try:
        header = json.loads(raw)
        for tensor in header["tensors"]:
            for section in tensor["sections"]:
                start, size = int(section["offset"]), int(section["length"])
                if 0 <= start <= start + size <= len(body):
                    section["crc32"] = zlib.crc32(body[start : start + size])
        raw = json.dumps(header).encode()
    except Exception:
        pass
    return PREAMBLE.pack(magic, version, flags, len(raw), zlib.crc32(raw)) + raw + bytes(body)


def one_input(data: bytes) -> None:
    """First byte even: the input as it is; odd: the rest re-signed (CRCs made valid)."""
    if not data:
        return
    source = data[1:] if data[0] % 2 == 0 else resign(data[1:])
    try:
        decode_arrays(source)
    except AlexCompressError:
        pass


def main() -> None:
    from fuzz.seeds import dcz_seeds, fuzz

    fuzz(one_input, lambda: [mode + s for s in dcz_seeds() for mode in (b"\x00", b"\x01")])


if __name__ == "__main__":
    main()
