"""`compress`, and `prune`, `quantize`, `encode` one by one, tensor by tensor: the same bytes as the
whole-model path, for every kind of pruning and quantizer, half precision and any --jobs; memory that grows
with the largest tensor, not the model."""

from __future__ import annotations

import io
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

from alexcompress import api
from alexcompress.compression.specs import PruneSpec, QuantizeSpec, compress
from alexcompress.compression.streaming import compress_streaming
from alexcompress.models import safetensors
from alexcompress.models.state import LazyState, numpy_state, random_model, widen
from alexcompress.parallel import set_jobs

CASES = [
    ("alexnet", PruneSpec(), QuantizeSpec()),
    ("alexnet", PruneSpec(std_scale=0.5), QuantizeSpec(layer_bits={"fc*": 3}, bits=6)),
    ("resnet18", PruneSpec(sparsity=0.7), QuantizeSpec(bits=4, quantizer="ecsq")),
    ("resnet18", PruneSpec(rates={"layer1.*": 0.5, "fc": 0.2}), QuantizeSpec(init="density")),
    ("mobilenet_v2", PruneSpec(sparsity=0.0), QuantizeSpec(bits=3)),
]


def _whole(state, arch, pruning, quantization, dtypes=None) -> bytes:
    copy = {k: v.copy() for k, v in state.items()}
    return compress(copy, arch=arch, pruning=pruning, quantization=quantization, inplace=True, dtypes=dtypes).data


@pytest.mark.parametrize("arch, pruning, quantization", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_streaming_writes_the_bytes_of_the_whole_model_path(arch, pruning, quantization):
    state = numpy_state(random_model(arch, 10, 0))
    before = {k: v.copy() for k, v in state.items()}
    streamed = compress_streaming(state, arch=arch, pruning=pruning, quantization=quantization)
    assert streamed.data == _whole(state, arch, pruning, quantization)
    assert all(np.array_equal(state[k], before[k]) for k in state)  # the source is only read


@pytest.mark.parametrize("dtype", [ml_dtypes.bfloat16, np.float16], ids=["bfloat16", "float16"])
def test_half_precision_streams_to_the_same_bytes_with_any_jobs(dtype):
    state = {k: v.astype(dtype) if v.dtype == np.float32 else v for k, v in numpy_state(random_model("resnet18", 10, 1)).items()}
    widened, dtypes = widen(state, "resnet18")
    whole = _whole(widened, "resnet18", PruneSpec(sparsity=0.8), QuantizeSpec(bits=4), dtypes)
    for jobs in (1, 2):
        set_jobs(jobs)
        try:
            streamed = compress_streaming(state, arch="resnet18", pruning=PruneSpec(sparsity=0.8), quantization=QuantizeSpec(bits=4))
        finally:
            set_jobs(1)
        assert streamed.data == whole


def test_ties_at_a_global_threshold_go_in_model_order_whatever_the_jobs():
    state = {f"l{i}.weight": np.full((64, 64), 0.5, dtype=np.float32) for i in range(5)}  # every weight a tie
    whole = _whole(state, "none", PruneSpec(sparsity=0.5), QuantizeSpec(bits=2))
    set_jobs(4)
    try:
        streamed = compress_streaming(state, arch="none", pruning=PruneSpec(sparsity=0.5), quantization=QuantizeSpec(bits=2))
    finally:
        set_jobs(1)
    assert streamed.data == whole
    assert [layer.kept for layer in streamed.pruning.layers] == [0, 0, 2048, 4096, 4096]


@pytest.mark.parametrize("arch, pruning, quantization", CASES[1:4], ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES[1:4])])
@pytest.mark.parametrize("half", [False, True], ids=["float32", "bfloat16"])
def test_streamed_stages_make_what_the_whole_model_stages_make(arch, pruning, quantization, half):
    state = numpy_state(random_model(arch, 10, 2))
    if half:
        state = {k: v.astype(ml_dtypes.bfloat16) if v.dtype == np.float32 else v for k, v in state.items()}
    before = {k: v.copy() for k, v in state.items()}

    def source():
        return api.ModelInput({k: v.copy() for k, v in state.items()}, arch, "m")

    whole = api.prune(source(), pruning)
    lazy = api.prune(api.ModelInput(state, arch, "m"), pruning, stream=True)
    assert lazy.result is not None and whole.result is not None
    assert isinstance(lazy.state, LazyState) and lazy.result.layers == []  # nothing done before it is read
    pruned = {k: np.asarray(v) for k, v in lazy.state.items()}
    assert {k: str(v.dtype) for k, v in pruned.items()} == {k: str(v.dtype) for k, v in state.items()}  # each in its own dtype
    assert all(_same(pruned[k], whole.state[k]) for k in state)
    assert lazy.result.layers == whole.result.layers and lazy.result.method == whole.result.method
    if half:  # a copy of each weight, in float32: the source is only read
        assert all(_same(state[k], before[k]) for k in state)
    else:  # a ModelInput's own float32 arrays are worked on in place, like every stage's; read again, the same
        assert all(_same(state[k], whole.state[k]) for k in state)
        assert all(_same(lazy.state[k], whole.state[k]) for k in state)

    quantized, report = api.quantize(api.ModelInput(dict(pruned), arch, "p"), quantization, stream=True)
    expected, expected_report = api.quantize(api.ModelInput({k: v.copy() for k, v in pruned.items()}, arch, "p"), quantization)
    values = dict(quantized.items())
    assert all(_same(values[k], expected[k]) for k in state)
    assert report.layers == expected_report.layers and report.method == expected_report.method

    encoded = api.encode_to(api.ModelInput(values, arch, "q"))
    assert encoded.data == api.encode(dict(expected), arch=arch)
    assert encoded.header.file_size == len(encoded.data)


def _same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_api_compress_streams_unless_it_needs_the_whole_model():
    source = api.ModelInput(numpy_state(random_model("alexnet", 10, 0)), "alexnet", "m")
    assert isinstance(api.compress(source, PruneSpec(sparsity=0.9)), api.Streamed)
    assert isinstance(api.compress(source, PruneSpec(sparsity=0.9), check=True), api.Compressed)
    assert isinstance(api.compress(source, PruneSpec(sparsity=0.9), QuantizeSpec(shared_codebook=True)), api.Compressed)


def _peak_mb(args: list[str]) -> float:
    """Peak RSS (VmHWM, MB) of the command as a fresh process, read as it exits."""
    code = (
        "import runpy, sys\n"
        f"sys.argv = {['alexcompress', *args]!r}\n"
        "try:\n    runpy.run_module('alexcompress', run_name='__main__')\nexcept SystemExit as e:\n    code = e.code\nelse:\n    code = 0\n"
        "print(int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024, code, file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    peak, status = done.stderr.strip().splitlines()[-1].split()
    assert status in ("0", "None"), done.stderr
    return float(peak)


def test_memory_grows_with_the_largest_tensor_not_the_model(tmp_path):
    """Two bf16 models of 8 MB tensors, 96 MB and 384 MB: compress, decode, and prune | quantize | encode
    one by one, each peak within ~60 MB of the same command's on the other (a tensor costs about its
    float32 size three times over while it is worked on, whatever the model's size)."""
    rng = np.random.default_rng(0)
    tensor = (0.02 * rng.standard_normal((1024, 2048))).astype(ml_dtypes.bfloat16)  # 4 MB bf16, 8 MB float32
    peaks = {}
    for count in (12, 48):
        path = tmp_path / f"m{count}.safetensors"
        with open(path, "wb") as handle:
            safetensors.write({f"layers.{i}.weight": tensor for i in range(count)}, handle)
        dcz = tmp_path / f"m{count}.dcz"
        compress_peak = _peak_mb(["compress", str(path), "--sparsity", "0.5", "--bits", "4", "-o", str(dcz), "-q"])
        decode_peak = _peak_mb(["decode", str(dcz), "-o", str(tmp_path / f"d{count}.safetensors"), "-q"])
        pruned, quantized = tmp_path / f"p{count}.safetensors", tmp_path / f"q{count}.safetensors"
        staged = [
            _peak_mb(["prune", str(path), "--sparsity", "0.5", "-o", str(pruned), "-q"]),
            _peak_mb(["quantize", str(pruned), "--bits", "4", "-o", str(quantized), "-q"]),
            _peak_mb(["encode", str(quantized), "-o", str(tmp_path / f"e{count}.dcz"), "-q"]),
        ]
        peaks[count] = (compress_peak, decode_peak, *staged)
    for small, large in zip(peaks[12], peaks[48], strict=True):
        assert large - small < 60, peaks  # the larger model's file is 4x the size: 3 x 144 MB more if it were held
    # the staged files hold what compress's does
    one, staged_state = api.decode(open(tmp_path / "m12.dcz", "rb").read())[0], api.decode(open(tmp_path / "e12.dcz", "rb").read())[0]
    assert all(_same(one[k], staged_state[k]) for k in one)
    back = safetensors.load(str(tmp_path / "d48.safetensors"))
    assert back["layers.47.weight"].dtype == ml_dtypes.bfloat16 and back["layers.47.weight"].shape == (1024, 2048)


def test_a_decoded_safetensors_holds_what_decode_gives(tmp_path):
    data = compress_streaming(
        numpy_state(random_model("resnet18", 10, 0)), arch="resnet18", pruning=PruneSpec(sparsity=0.5), quantization=QuantizeSpec(bits=4)
    ).data
    buffer = io.BytesIO()
    api.decode_to(data, "x.safetensors")(buffer)
    back = safetensors.loads(bytearray(buffer.getvalue()), "x")
    expected, _ = api.decode(data)
    assert list(back) == list(expected)
    assert all(np.array_equal(back[k].reshape(-1).view(np.uint8), expected[k].reshape(-1).view(np.uint8)) for k in expected)
