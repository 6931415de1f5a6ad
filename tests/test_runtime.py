"""The sparse runtime: a `.dcz` run from its compressed form gives the dense model's outputs, never builds
dense weights, and says which layers it could not run sparsely."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings, strategies as st
from torch import nn

import alexcompress
from alexcompress.compression.specs import PruneSpec, QuantizeSpec, compress
from alexcompress.errors import ModelError
from alexcompress.models.dcz import encode
from alexcompress.models.state import random_model
from alexcompress.runtime.sparse import CodedConv, SparseLinear, load_sparse


def _close(dense: torch.Tensor, sparse: torch.Tensor) -> None:
    scale = dense.abs().max().clamp_min(1e-12)
    assert float((dense - sparse).abs().max() / scale) < 1e-4
    assert torch.equal(dense.argmax(dim=1), sparse.argmax(dim=1))


def _write(tmp_path, state, arch=None, name="m.dcz"):
    path = tmp_path / name
    path.write_bytes(encode(state, arch=arch))
    return path


def test_alexnet_sparse_equals_dense(tmp_path, quantized10):
    path = _write(tmp_path, quantized10)
    dense, sparse = alexcompress.load(path), alexcompress.load(path, sparse=True)
    assert not sparse.training
    assert isinstance(sparse.classifier[1], SparseLinear) and isinstance(sparse.features[0], CodedConv)
    assert sparse.runtime_plan.dense == [] and len(sparse.runtime_plan.sparse) == 8
    assert "csr" in repr(sparse) and "from codes" in repr(sparse)
    for batch in (1, 3):
        x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            _close(dense(x), sparse(x))
    # no layer of the sparse module holds a dense float weight of a replaced layer
    assert not any(n.endswith(".weight") for n, _ in sparse.named_parameters())
    np.testing.assert_array_equal(sparse.classifier[6].dense_weight().numpy(), quantized10["classifier.6.weight"].numpy())
    np.testing.assert_array_equal(sparse.features[3].dense_weight().numpy(), quantized10["features.3.weight"].numpy())


@pytest.mark.parametrize(
    "coder, sparse_kind, dense_kind", [("huffman", "sparse_huffman", "dense_huffman"), ("context", "sparse_ctx", "dense_ctx")]
)
def test_layers_kept_whole_run_from_a_dense_layout(tmp_path, coder, sparse_kind, dense_kind):
    """Unpruned layers are written in a dense layout (no index stream), pruned ones sparse, by either coder;
    the runtime builds them all from their nonzeros, never densifying the file's layers."""
    state = compress(
        random_model(num_classes=10, seed=2),
        pruning=PruneSpec(rates={"features.0.weight": 1.0, "classifier.*": 0.05}),
        quantization=QuantizeSpec(4, 3),
        coder=coder,
    )
    path = tmp_path / "m.dcz"
    path.write_bytes(state.data)
    header = alexcompress.codec.container.parse_header(state.data)
    kinds = {t.name: t.encoding for t in header.tensors}
    assert kinds["features.0.weight"] == dense_kind and kinds["classifier.1.weight"] == sparse_kind
    dense, sparse = alexcompress.load(path), alexcompress.load(path, sparse=True)
    assert isinstance(sparse.features[0], CodedConv) and not sparse.runtime_plan.dense
    np.testing.assert_array_equal(sparse.features[0].dense_weight().numpy(), dense.features[0].weight.detach().numpy())
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _close(dense(x), sparse(x))


def test_another_torchvision_architecture(tmp_path):
    path = tmp_path / "m.dcz"
    path.write_bytes(compress(random_model("mobilenet_v3_small", num_classes=7, seed=1), quantization=QuantizeSpec(4, 4)).data)
    dense, sparse = alexcompress.load(path), alexcompress.load(path, sparse=True)
    kinds = set(sparse.runtime_plan.sparse.values())
    assert kinds == {"CodedConv", "SparseLinear"} and not sparse.runtime_plan.dense
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _close(dense(x), sparse(x))


class Mixed(nn.Module):
    """A model of no known architecture: attention reads out_proj.weight itself, so that stays dense."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.conv = nn.Conv1d(16, 16, 3, padding=1, bias=False)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, 5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.conv(self.embed(tokens).transpose(1, 2)).transpose(1, 2)
        h, _ = self.attn(h, h, h)
        return self.head(h.mean(dim=1))


def _mixed(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "mixed.dcz"
    path.write_bytes(compress(Mixed().state_dict(), arch="none", quantization=QuantizeSpec(4, 4)).data)
    return path


def test_own_module_runs_what_it_can_sparsely(tmp_path):
    path = _mixed(tmp_path)
    dense = alexcompress.load(path, model=Mixed())
    sparse = alexcompress.load(path, model=Mixed(), sparse=True)
    assert sparse.runtime_plan.sparse == {"conv": "CodedConv", "head": "SparseLinear"}
    assert set(sparse.runtime_plan.dense) == {"embed.weight", "attn.in_proj_weight", "attn.out_proj.weight"}
    assert "decoded dense: embed.weight" in sparse.runtime_plan.describe()
    tokens = torch.randint(0, 50, (4, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _close(dense(tokens), sparse(tokens))
    with pytest.raises(ModelError, match="no known architecture"):
        alexcompress.load(path, sparse=True)


def test_refusals(tmp_path, quantized10):
    pt = tmp_path / "m.pt"
    pt.write_bytes(alexcompress.models.state.state_dict_bytes(quantized10))
    with pytest.raises(ModelError, match=r"runs \.dcz files"):
        alexcompress.load(pt, sparse=True)
    path = _mixed(tmp_path)
    wrong = Mixed()
    wrong.head = nn.Linear(16, 6)
    with pytest.raises(ModelError, match=r"head.weight: the file holds shape \[5, 16\], the model \[6, 16\]"):
        load_sparse(path.read_bytes(), wrong)


@settings(max_examples=40, deadline=None)
@given(
    out_features=st.integers(1, 40),
    in_features=st.integers(1, 70),
    density=st.sampled_from([0.0, 0.02, 0.3, 1.0]),
    batch=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_sparse_linear_matches_linear(out_features, in_features, density, batch, seed):
    rng = np.random.default_rng(seed)
    codebook = np.sort(rng.choice([-1, 1], 6) * rng.uniform(0.1, 2, 6)).astype(np.float32)
    codebook = np.unique(codebook)
    weight = np.where(rng.random((out_features, in_features)) < density, rng.choice(codebook, (out_features, in_features)), 0).astype(
        np.float32
    )
    layer = nn.Linear(in_features, out_features)
    positions = np.flatnonzero(weight).astype(np.int32)
    symbols = np.searchsorted(codebook, weight.reshape(-1)[positions])
    sparse = SparseLinear.from_nonzeros(layer, positions, symbols, codebook)
    sparse.bias = nn.Parameter(layer.bias.detach().clone(), requires_grad=False)
    layer.weight.data = torch.from_numpy(weight)
    x = torch.from_numpy(rng.standard_normal((batch, 2, in_features)).astype(np.float32))
    with torch.no_grad():
        torch.testing.assert_close(sparse(x), layer(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(sparse.dense_weight().numpy(), weight)


MEMORY_PROBE = textwrap.dedent(
    """
    import sys, torch, torchvision, alexcompress, alexcompress.runtime.sparse
    def kib(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1])
    before = kib("VmRSS:")
    open("/proc/self/clear_refs", "w").write("5")  # reset the high-water mark to now
    model = alexcompress.load(sys.argv[1], sparse=True)
    print(before, kib("VmHWM:"), kib("VmRSS:"))
    """
)


def test_loading_never_builds_dense_weights(tmp_path):
    """The full 1000-class AlexNet (244 MB of float32; fc6 alone is 151 MB): loading it sparsely must stay
    far below the dense size at its peak, which a single densified fc layer would exceed."""
    path = tmp_path / "alexnet.dcz"
    path.write_bytes(compress(random_model("alexnet", num_classes=1000, seed=0), pruning=PruneSpec(preset="paper"), inplace=True).data)
    dense_kib = 61_100_840 * 4 // 1024
    probe = tmp_path / "probe.py"
    probe.write_text(MEMORY_PROBE)
    done = subprocess.run([sys.executable, str(probe), str(path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    before, peak, after = map(int, done.stdout.split())
    assert peak - before < 0.45 * dense_kib, (before, peak, after, dense_kib)
    assert after - before < 0.30 * dense_kib, (before, peak, after, dense_kib)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.fc = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).flatten(1))


def test_mutated_files_end_in_an_error_or_the_dense_model(tmp_path):
    """The runtime builds from the same validated streams as the decoder: a damaged file is a DczError or
    ModelError, and one that still loads runs exactly like its dense decode."""
    from alexcompress.errors import DczError
    from alexcompress.models.dcz import decode_arrays
    from alexcompress.models.state import load_into
    from tests.fuzz_dcz import mutations

    torch.manual_seed(0)
    data = compress(Tiny().state_dict(), arch="none", pruning=PruneSpec(sparsity=0.5), quantization=QuantizeSpec(3, 3)).data
    x = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    stream, loaded, cases = mutations(data, np.random.default_rng(0)), 0, 600
    for _ in range(cases):
        description, mutated = next(stream)
        try:
            sparse = load_sparse(mutated, Tiny())
        except (DczError, ModelError):
            continue
        loaded += 1
        dense = load_into(Tiny(), decode_arrays(mutated)[0])
        with torch.no_grad():
            torch.testing.assert_close(sparse(x), dense(x), msg=description)
    assert 0 < loaded < cases


@settings(max_examples=30, deadline=None)
@given(
    extras=st.lists(
        # sizes that fit the runtime's buffers too: Tiny's conv has 54 weights (its codes), a table of <= 9
        st.tuples(
            st.sampled_from(["conv.codes", "conv.table", "fc.weight_csr", "fc.bias", "fc.extra", "extra"]), st.sampled_from([1, 5, 9, 54])
        ),
        max_size=3,
        unique_by=lambda t: t[0],
    ),
    drop=st.sampled_from([None, "fc.bias", "conv.bias"]),
)
@example(extras=[("conv.codes", 54)], drop=None)  # the smuggled buffer found by the adversarial run
@example(extras=[("conv.table", 9), ("extra", 1)], drop="fc.bias")
def test_sparse_and_dense_loaders_accept_the_same_files(tmp_path_factory, extras, drop):
    """Property: any file one loader accepts the other accepts too, and both run alike. A raw tensor named
    like a runtime buffer (`conv.codes`) once replaced the sparse layer's own codes, which then indexed past
    its table when run; the dense loader refuses such a key."""
    from collections import OrderedDict

    from alexcompress.errors import DczError

    torch.manual_seed(0)
    base = compress(Tiny().state_dict(), arch="none", pruning=PruneSpec(sparsity=0.5), quantization=QuantizeSpec(3, 3)).quantization.state
    state = OrderedDict((k, v) for k, v in base.items() if k != drop)
    for name, size in extras:
        state[name] = torch.full((size,), 200.0)
    path = tmp_path_factory.mktemp("f") / "m.dcz"
    path.write_bytes(encode(state, arch="none"))
    x = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    outputs = []
    for sparse in (False, True):
        try:
            model = alexcompress.load(path, model=Tiny(), sparse=sparse)
        except (DczError, ModelError):
            outputs.append(None)
            continue
        with torch.no_grad():
            outputs.append(model(x))
    assert (outputs[0] is None) == (outputs[1] is None), (extras, drop, outputs)
    if outputs[0] is not None:
        _close(outputs[0], outputs[1])
