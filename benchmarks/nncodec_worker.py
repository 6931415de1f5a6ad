"""Runs inside NNCodec's own venv (bench_nncodec.py makes it): codes integer levels with NNCodec's DeepCABAC.

Reads an .npz of int32 level tensors (2-D: rows = output units; level 0 = pruned, nonzero levels = centroid
ranks counted from the zero), writes JSON: per tensor, the smallest stream over the settings tried (its
`cabac_unary_length` and row-skip flag), its bytes, encode and decode seconds, and the bytes of the
significance map alone (the same tensor with every nonzero level set to 1: NNCodec's positions). Every
stream is decoded and compared with the levels it coded; a mismatch stops the run.

    nncodec-venv/bin/python benchmarks/nncodec_worker.py levels.npz out.json
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
from nncodec.extensions import deepCABAC

UNARY_LENGTHS = (1, 5, 11, 16)  # NNCodec's default is 11 (cabac_unary_length_minus1 = 10)


def hdsp_off():
    return [deepCABAC.HdspMode.AlwaysOff, np.array((0, 0), dtype=np.int8)]


def code(levels: np.ndarray, unary: int, row_skip: int) -> bytes:
    encoder = deepCABAC.Encoder()
    encoder.initCtxModels(unary, 0)
    encoder.encodeLayer(levels, 0, 0, 0, 0, row_skip, np.zeros(levels.shape[0], dtype=np.int32), *hdsp_off(), 0, 0)
    return bytes(encoder.finish().tobytes())


def decode(stream: bytes, shape: tuple, unary: int) -> np.ndarray:
    decoder = deepCABAC.Decoder()
    buffer = np.frombuffer(stream, dtype=np.uint8).copy()
    decoder.setStream(buffer)
    decoder.initCtxModels(unary)
    out = np.zeros(shape, dtype=np.int32)
    decoder.decodeLayer(out, 0, 0, 0, 0, *hdsp_off(), 0, 0)
    decoder.finish()
    return out


def best(levels: np.ndarray) -> dict:
    tried = []
    for unary in UNARY_LENGTHS:
        for row_skip in (0, 1):
            start = time.perf_counter()
            stream = code(levels, unary, row_skip)
            tried.append((len(stream), time.perf_counter() - start, unary, row_skip, stream))
    size, seconds, unary, row_skip, stream = min(tried, key=lambda t: t[0])
    start = time.perf_counter()
    back = decode(stream, levels.shape, unary)
    decode_seconds = time.perf_counter() - start
    if not np.array_equal(back, levels):
        raise SystemExit(f"NNCodec did not decode back what it coded (unary {unary}, row skip {row_skip})")
    return {"bytes": size, "encode_s": seconds, "decode_s": decode_seconds, "unary": unary, "row_skip": row_skip}


def main() -> None:
    source, target = sys.argv[1:3]
    out = {}
    with np.load(source) as levels:
        for name in levels.files:
            tensor = np.ascontiguousarray(levels[name], dtype=np.int32)
            result = best(tensor)
            result["positions_bytes"] = best((tensor != 0).astype(np.int32))["bytes"]
            out[name] = result
            print(f"{name}: {result['bytes']:,} bytes", file=sys.stderr, flush=True)
    with open(target, "w") as handle:
        json.dump(out, handle)


if __name__ == "__main__":
    main()
