"""A fuzz harness for the `.dcz` reader: mutate a valid file every way we can think of, and require that
each case ends in a DczError or a clean decode, fast and small.

Besides blind bit flips and truncations (which the CRCs catch), it re-signs mutated files, fixing up the
section and header CRC-32s, so the mutations reach the decoder's own checks: hostile integers in the header,
damaged code tables and Huffman streams. The suite runs a few thousand cases; for longer runs:

    python -m tests.fuzz_dcz --cases 200000 --seed 1
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from alexcompress.codec.container import MAGIC, PREAMBLE, parse_header, read_dcz, write_dcz
from alexcompress.codec.encodings import dense_ctx, dense_huffman, raw, sparse_ctx, sparse_huffman
from alexcompress.errors import DczError

encode_raw, encode_sparse, encode_dense = raw.ENCODING.encode, sparse_huffman.ENCODING.encode, dense_huffman.ENCODING.encode

HOSTILE_INTS = [0, 1, -1, 2, 255, 256, 4096, 2**20, 2**28, 2**31 - 1, 2**31, 2**32, 2**53, 2**63, 2**64, 10**30]


def sample_file(seed: int = 0) -> bytes:
    """A small valid file: two sparse tensors (one with long gaps), a dense-coded one, each again context-coded,
    and a raw one."""
    rng = np.random.default_rng(seed)
    a = np.where(rng.random((12, 20)) < 0.3, rng.choice(np.array([-0.5, -0.1, 0.2, 0.7], np.float32), (12, 20)), 0)
    b = np.zeros(3000, np.float32)
    b[rng.choice(3000, 7, replace=False)] = 0.25
    tensors = [
        encode_sparse("a.weight", a.astype(np.float32)),
        encode_sparse("b.weight", b, 2),
        encode_dense("c.weight", np.where(rng.random((6, 9)) < 0.8, rng.choice(np.array([-0.3, 0.1, 0.4], np.float32), (6, 9)), 0)),
        encode_raw("a.bias", rng.normal(size=5).astype(np.float32)),
        sparse_ctx.ENCODING.encode("d.weight", a.astype(np.float32)),
        sparse_ctx.ENCODING.encode("e.weight", b, 2),
        dense_ctx.ENCODING.encode(
            "f.weight", np.where(rng.random((6, 9)) < 0.8, rng.choice(np.array([-0.3, 0.1, 0.4], np.float32), (6, 9)), 0)
        ),
    ]
    return write_dcz(tensors, arch="alexnet", num_classes=10, producer="fuzz", options={})


def split(data: bytes) -> tuple[dict, bytes]:
    length = PREAMBLE.unpack_from(data)[3]
    return json.loads(data[PREAMBLE.size : PREAMBLE.size + length]), data[PREAMBLE.size + length :]


def resign(header: dict, body: bytes, fix_sections: bool = True) -> bytes:
    """Reassemble a file with correct CRC-32s, so that mutations get past the checksums."""
    if fix_sections:
        for tensor in header.get("tensors", []):
            for section in tensor.get("sections", []):
                try:
                    section["crc32"] = zlib.crc32(body[section["offset"] : section["offset"] + section["length"]])
                except (TypeError, KeyError):
                    pass
    raw = json.dumps(header).encode()
    return PREAMBLE.pack(MAGIC, 1, 0, len(raw), zlib.crc32(raw)) + raw + body


def _int_paths(obj, path=()) -> Iterator[tuple]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _int_paths(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _int_paths(v, path + (i,))
    elif isinstance(obj, int) and not isinstance(obj, bool):
        yield path


def _set(obj: dict, path: tuple, value: int) -> None:
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value


def mutations(data: bytes, rng: np.random.Generator) -> Iterator[tuple[str, bytes]]:
    """An endless stream of (description, mutated file)."""
    header, body = split(data)
    paths = list(_int_paths(header))
    while True:
        kind = int(rng.integers(0, 6))
        if kind == 0:
            bit = int(rng.integers(0, 8 * len(data)))
            out = bytearray(data)
            out[bit // 8] ^= 1 << (bit % 8)
            yield f"flip bit {bit}", bytes(out)
        elif kind == 1:
            cut = int(rng.integers(0, len(data)))
            yield f"truncate at {cut}", data[:cut]
        elif kind == 2:  # damaged section bytes, CRCs fixed up: reaches the Huffman and gap decoders
            out = bytearray(body)
            for _ in range(int(rng.integers(1, 4))):
                out[int(rng.integers(0, len(out)))] = int(rng.integers(0, 256))
            yield "section bytes, re-signed", resign(json.loads(json.dumps(header)), bytes(out))
        elif kind == 3:  # a hostile integer anywhere in the header
            h = json.loads(json.dumps(header))
            path = paths[int(rng.integers(0, len(paths)))]
            value = HOSTILE_INTS[int(rng.integers(0, len(HOSTILE_INTS)))] * int(rng.choice([1, -1]))
            _set(h, path, value)
            yield f"header {'/'.join(map(str, path))} = {value}", resign(h, body, fix_sections=False)
        elif kind == 4:  # a plausible but wrong integer: off by a little
            h = json.loads(json.dumps(header))
            path = paths[int(rng.integers(0, len(paths)))]
            node = h
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] += int(rng.integers(-3, 4))
            yield f"header {'/'.join(map(str, path))} nudged", resign(h, body)
        else:  # trailing garbage or a duplicated section
            extra = bytes(rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8))
            yield "trailing bytes", data + extra


@dataclass
class FuzzReport:
    cases: int = 0
    errors: int = 0
    decoded: int = 0
    slowest: float = 0.0
    slowest_case: str = ""
    peak_bytes: int = 0
    crashes: list = None  # (description, exception repr)
    over_budget: list = None  # (description, bytes traced, bytes allowed)


MEMORY_SLACK = 64 << 20


def memory_budget(mutated: bytes) -> int:
    """What a case may allocate: 64 MiB, plus the dense float32 output of a header the reader accepted."""
    try:
        header = parse_header(mutated)
    except DczError:
        return MEMORY_SLACK
    return MEMORY_SLACK + 4 * sum(t.numel for t in header.tensors)


def run(cases: int, seed: int = 0, check: Callable[[dict], None] | None = None, max_elements: int = 1 << 28) -> FuzzReport:
    """Run `cases` mutations under an element limit (`--max-elements`; the default keeps a case that
    declares the most a header may within 1 GiB); any exception other than DczError is recorded as a crash."""
    from alexcompress.codec.container import max_elements as current, set_max_elements

    before = current()
    set_max_elements(max_elements)
    try:
        return _run(cases, seed, check)
    finally:
        set_max_elements(before)


def _run(cases: int, seed: int, check: Callable[[dict], None] | None) -> FuzzReport:
    rng = np.random.default_rng(seed)
    data = sample_file(seed)
    report = FuzzReport(crashes=[], over_budget=[])
    stream = mutations(data, rng)
    tracemalloc.start()
    try:
        for _ in range(cases):
            description, mutated = next(stream)
            tracemalloc.reset_peak()
            baseline = tracemalloc.get_traced_memory()[0]
            start = time.perf_counter()
            try:
                header, tensors = read_dcz(mutated)
                for entry in header.tensors:  # a decode that succeeds gives exactly what the header declares
                    if tensors[entry.name].shape != entry.shape:
                        raise AssertionError(f"{entry.name}: decoded shape {tensors[entry.name].shape} != {entry.shape}")
                if check:
                    check(tensors)
                del header, tensors
                report.decoded += 1
            except DczError:
                report.errors += 1
            except Exception as exc:  # a crash: the reader let something through
                report.crashes.append((description, repr(exc)))
            elapsed = time.perf_counter() - start
            used = tracemalloc.get_traced_memory()[1] - baseline
            report.peak_bytes = max(report.peak_bytes, used)
            if used > memory_budget(mutated):
                report.over_budget.append((description, used, memory_budget(mutated)))
            if elapsed > report.slowest:
                report.slowest, report.slowest_case = elapsed, description
            report.cases += 1
    finally:
        tracemalloc.stop()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    report = run(args.cases, args.seed)
    print(
        f"{report.cases:,} cases in {time.perf_counter() - start:.1f} s: {report.errors:,} DczError, {report.decoded:,} decoded, {len(report.crashes)} crashes"
    )
    print(
        f"slowest case {report.slowest * 1000:.1f} ms ({report.slowest_case}); peak traced memory {report.peak_bytes / 1e6:.2f} MB; {len(report.over_budget)} over budget"
    )
    for description, error in report.crashes[:20]:
        print(f"CRASH {description}: {error}")
    raise SystemExit(1 if report.crashes or report.over_budget else 0)


if __name__ == "__main__":
    main()
