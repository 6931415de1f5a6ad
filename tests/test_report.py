"""Size accounting: every figure comes from the file, and the parts add up to its size on disk."""

from __future__ import annotations

import alexcompress
from alexcompress.cli.tables import display_name
from alexcompress.codec.accounting import breakdown, ladder, layer_rows, original_bytes
from alexcompress.codec.container import parse_header


def test_parts_add_up_to_the_file(quantized10):
    data = alexcompress.encode(quantized10)
    header = parse_header(data)
    parts = breakdown(header)
    assert parts.total == len(data) == header.file_size
    rows = layer_rows(header)
    assert [display_name("alexnet", r.name) for r in rows] == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
    assert sum(r.bytes_file for r in rows) == parts.codes + parts.gaps + parts.codebooks + parts.code_tables
    assert original_bytes(header) == sum(v.numel() * 4 for v in quantized10.values())
    steps = ladder(header)
    assert steps.huffman == len(data) < steps.quantized < steps.pruned < steps.original
    for r in rows:
        if r.nnz == 0:  # global pruning of a random-init AlexNet empties fc6 (its weights are the smallest)
            assert r.weight_bits_fixed == 0 and r.weight_bits_coded == 0 and r.bytes_fixed == 0
            continue
        assert r.weight_bits_fixed <= (5 if r.name.startswith("classifier") else 8)
        if r.index_bits:  # a sparse layout
            assert 0 < r.index_bits_coded <= r.index_bits  # never loses to the fixed width
        else:  # a dense layout: no index stream, a symbol per weight (zeros included)
            assert r.index_bits_coded == 0 and r.entries == r.weights
        assert 0 < r.weight_bits_coded <= r.weight_bits_fixed + 1  # + 1: the filler or zero symbol
        assert 0 < r.kept < 1
