"""Data-parallel retraining under torchrun (CPU, gloo, 2 processes): ranks identical, masks exact, the
same result as one process with the same global batch, rank 0 alone writing, a dead rank ending the job,
and a mid-epoch resume equal to an unbroken run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from alexcompress.compression.sensitivity import read_curves
from alexcompress.train.config import TrainConfig
from alexcompress.train.data import epoch_order
from alexcompress.train.hooks import CentroidFinetuning, MaskedRetraining
from alexcompress.train.log import SilentLog
from alexcompress.train.trainer import _train

from .ddp_worker import CODED, KINDS, Net, data, start_state
from .test_train import assert_trained, make_image_folder

HERE = Path(__file__).resolve().parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node"]


def torchrun(n: int, *args: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*TORCHRUN, str(n), *map(str, args)], capture_output=True, text=True, timeout=300, env=env, **kwargs)


@pytest.mark.parametrize("kind", KINDS)
def test_two_ranks_stay_identical_exact_and_match_one_process(tmp_path, kind):
    """`norm`: batch norm (statistics over the global batch) and dropout (masks keyed by the global batch's
    rows): two processes take one process's steps there too, running statistics included."""
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    for n, out in ((1, one), (2, two)):
        done = torchrun(n, HERE / "ddp_worker.py", out, kind)
        assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(two / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    reference = torch.load(one / "rank0.pt", weights_only=True)
    start = start_state(kind)
    assert ranks[0].keys() == start.keys()
    for key in start:
        assert torch.equal(ranks[0][key], ranks[1][key]), key  # bit-identical across ranks
        assert not torch.equal(ranks[0][key], start[key]) or key == "conv.bias", key  # it did train
        torch.testing.assert_close(ranks[0][key], reference[key], rtol=1e-4, atol=1e-5)  # = one process, same global batch
    for key in CODED:
        pruned = start[key] == 0
        assert (ranks[0][key][pruned] == 0).all()  # pruned weights exactly zero
        if kind == "centroids":  # assignments fixed: as many distinct values as before, zeros where they were
            assert ranks[0][key][~pruned].unique().numel() <= start[key][~pruned].unique().numel()
            assert (ranks[0][key][~pruned] != 0).all()


def test_epoch_order_shards_the_one_process_order():
    whole = epoch_order(64, seed=3, epoch=2)
    shards = [epoch_order(64, seed=3, epoch=2, rank=r, world=2) for r in (0, 1)]
    assert sorted(shards[0] + shards[1]) == list(range(64))
    # global batch b of 16 = the union of each rank's batch b of 8
    for b in range(4):
        assert sorted(shards[0][8 * b : 8 * b + 8] + shards[1][8 * b : 8 * b + 8]) == sorted(whole[16 * b : 16 * b + 16])
    padded = [epoch_order(5, shuffle=False, rank=r, world=2) for r in (0, 1)]
    assert padded == [[0, 2, 4], [1, 3, 0]]
    assert [epoch_order(5, shuffle=False, rank=r, world=2, pad=False) for r in (0, 1)] == [[0, 2, 4], [1, 3]]


class StopAt(SilentLog):
    """Ctrl-C arriving right after batch `batch` of epoch `epoch` (1-based)."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.at = (epoch, batch)

    def batch(self, stage, epoch, epochs, batch, *rest):
        if (epoch, batch) == self.at:
            raise KeyboardInterrupt


@pytest.mark.parametrize("kind", ["masked", "centroids"])
def test_mid_epoch_resume_equals_an_unbroken_run(tmp_path, kind):
    def run(log=None, resume=False, every=0):
        torch.manual_seed(0)
        net = Net()
        ckpt = torch.load(tmp_path / "c.ckpt", weights_only=True) if resume else None
        net.load_state_dict(OrderedDict(ckpt["model"]) if resume else start_state(kind))
        config = TrainConfig(
            epochs=3,
            lr=0.05,
            batch_size=8,
            device="cpu",
            seed=3,
            checkpoint=str(tmp_path / "c.ckpt"),
            resume=resume,
            checkpoint_every=every,
        )
        if kind == "masked":
            hooks = MaskedRetraining(net, CODED, ckpt["masks"] if resume else None)
        else:
            hooks = CentroidFinetuning(net, CODED, *((ckpt["assignments"], ckpt["centroids"]) if resume else ()))
        _train(net, hooks, data(), config, stage="s", resume_from=ckpt, log=log)
        return net.state_dict()

    unbroken = run()
    assert_trained(start_state(kind), unbroken, CODED, codebook=kind == "centroids")
    with pytest.raises(KeyboardInterrupt):
        run(StopAt(2, 3))  # the interrupt's own checkpoint: epoch 2, after batch 3 of 8
    assert torch.load(tmp_path / "c.ckpt", weights_only=True)["batch"] == 3
    resumed = run(resume=True)
    assert all(torch.equal(unbroken[k], resumed[k]) for k in unbroken)
    # a periodic checkpoint (every 2 batches) taken before a crash that left no checkpoint of its own
    with pytest.raises(KeyboardInterrupt):
        run(StopAt(2, 2), every=2)  # written at batch 2 by the period, then again by the interrupt: same point
    (tmp_path / "c.ckpt").rename(tmp_path / "keep.ckpt")
    with pytest.raises(KeyboardInterrupt):
        run(StopAt(3, 5), every=2)
    shutil.copy(tmp_path / "keep.ckpt", tmp_path / "c.ckpt")
    assert torch.load(tmp_path / "c.ckpt", weights_only=True)["batch"] == 2
    resumed = run(resume=True)
    assert all(torch.equal(unbroken[k], resumed[k]) for k in unbroken)


CLI_ARGS = ["--sparsity", "0.5", "--image-size", "32", "--resize", "32", "--device", "cpu", "--log-every", "1"]


@pytest.fixture(scope="module")
def squeeze(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    images = make_image_folder(root / "images", classes=2, per_class=32, size=32)
    model = root / "sq.pt"
    done = subprocess.run(
        [sys.executable, "-m", "alexcompress", "init", "--arch", "squeezenet1_1", "--num-classes", "2", "-o", model, "-q"],
        capture_output=True,
    )
    assert done.returncode == 0, done.stderr
    return root, images, model


def _rank_pids(parent: int) -> dict[int, int]:
    """{rank: pid} of torchrun's workers (the descendants of `parent` whose environment has RANK)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = {}, [parent]
    while todo:
        for pid in children.get(todo.pop(), []):
            todo.append(pid)
            try:
                env = dict(v.split("=", 1) for v in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in v)
            except OSError:
                continue
            if "RANK" in env and "TORCHELASTIC_RUN_ID" in env:
                found[int(env["RANK"])] = pid
    return found


def _start(args: list[str], stderr_path: Path) -> subprocess.Popen:
    handle = open(stderr_path, "w")
    return subprocess.Popen(
        [*TORCHRUN, "2", "-m", "alexcompress", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=handle,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        start_new_session=True,
    )


def _alive(pid: int) -> bool:
    """Whether `pid` still runs (a zombie waiting to be reaped counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _kill_job(job: subprocess.Popen, ranks: dict[int, int]) -> None:
    """torchrun and its workers (which run in sessions of their own, out of reach of a group kill)."""
    for pid in ranks.values():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.killpg(job.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    job.wait(timeout=60)


def _wait_for(predicate, job: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert job.poll() is None, f"the job ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def _init(arch: str, classes: int, output: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "alexcompress", "init", "--arch", arch, "--num-classes", str(classes), "-o", output, "-q"],
        capture_output=True,
    )
    assert done.returncode == 0, done.stderr


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def _relative_difference(a: dict, b: dict) -> float:
    """The worst float tensor's max |a - b| / max |a| (parameters and running statistics alike)."""
    return max(float((a[k] - b[k]).abs().max() / a[k].abs().max().clamp(min=1e-12)) for k in a if a[k].is_floating_point())


@pytest.mark.parametrize("arch, size", [("resnet18", 32), ("alexnet", 64)])
def test_batch_norm_and_dropout_models_retrain_under_torchrun_as_one_process(tmp_path, arch, size):
    """ResNet-18 (batch norm: statistics over the global batch) and AlexNet (dropout: masks keyed by the
    global batch's rows), `prune --data` then `quantize --data`, one process against two: the same step to
    float rounding, running statistics included (one step each: over many, training amplifies rounding
    itself; benchmarks/bench_ddp.py measures whole runs against that floor), having trained and kept masks
    and codebooks."""
    images = make_image_folder(tmp_path / "images", classes=2, per_class=8, size=size)
    model = tmp_path / "m.pt"
    _init(arch, 2, model)
    common = [
        "--data",
        images,
        "--batch-size",
        "16",
        "--epochs",
        "1",
        "--lr",
        "0.01",
        "--image-size",
        size,
        "--resize",
        size,
        "--device",
        "cpu",
    ]
    untrained = [tmp_path / "p0.pt", tmp_path / "q0.pt"]
    for args in (["prune", model, "--rates", "*=0.5", "-o", untrained[0]], ["quantize", untrained[0], "--bits", "4", "-o", untrained[1]]):
        done = subprocess.run([sys.executable, "-m", "alexcompress", *map(str, args)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
    outputs = {}
    for n in (1, 2):
        pruned, quantized = tmp_path / f"p{n}.pt", tmp_path / f"q{n}.pt"
        done = torchrun(n, "-m", "alexcompress", "prune", model, "--rates", "*=0.5", *common, "-o", pruned)
        assert done.returncode == 0, done.stderr[-3000:]
        done = torchrun(n, "-m", "alexcompress", "quantize", pruned, "--bits", "4", *common, "-o", quantized)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "each process's own generator" not in done.stderr  # nothing random is left per rank
        outputs[n] = (_tensors(pruned), _tensors(quantized))
    start = [_tensors(p) for p in untrained]
    coded = [k for k in start[0] if k.endswith("weight") and start[0][k].dim() > 1]
    for stage in (0, 1):
        for n in (1, 2):
            assert_trained(start[stage], outputs[n][stage], coded, codebook=stage == 1)
        assert _relative_difference(outputs[1][stage], outputs[2][stage]) < 1e-3
    if arch == "resnet18":
        stats = [k for k in start[0] if k.endswith("running_mean")]
        assert stats and all(not torch.equal(outputs[2][0][k], start[0][k]) for k in stats)  # the statistics were updated


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory):
    """MobileNetV3-small: batch norm and dropout both, small enough for a quick two-process run."""
    root = tmp_path_factory.mktemp("ddp-mobilenet")
    images = make_image_folder(root / "images", classes=2, per_class=32, size=32)
    _init("mobilenet_v3_small", 2, root / "m.pt")
    return root, images, root / "m.pt"


def test_cli_under_torchrun_rank0_writes_and_resumes_mid_epoch(mobilenet, tmp_path):
    root, images, model = mobilenet
    common = ["prune", model, "--data", images, "--epochs", "3", "--batch-size", "4", "--lr", "0.01", "--rates", "*=0.5", *CLI_ARGS[2:]]
    unbroken = tmp_path / "unbroken.pt"
    done = torchrun(2, "-m", "alexcompress", *common, "-o", unbroken)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("Achieved sparsity") == 1  # rank 0 alone prints
    assert "retrain epoch 3/3 done" in done.stderr and not (tmp_path / "unbroken.pt.ckpt").exists()
    untrained = tmp_path / "untrained.pt"
    done = subprocess.run([sys.executable, "-m", "alexcompress", "prune", model, "--rates", "*=0.5", "-o", untrained], capture_output=True)
    assert done.returncode == 0, done.stderr
    start, a = _tensors(untrained), _tensors(unbroken)
    assert_trained(start, a, [k for k in start if k.endswith("weight") and start[k].dim() > 1])
    assert all(not torch.equal(a[k], start[k]) for k in start if k.endswith("running_var"))  # batch norm trained too

    # pre-empted: frozen right after its first mid-epoch checkpoint, then killed outright
    output, ckpt = tmp_path / "resumed.pt", tmp_path / "resumed.pt.ckpt"
    job = _start([*common, "-o", output, "--checkpoint-every", "2"], tmp_path / "stderr.txt")
    ranks: dict[int, int] = {}
    try:
        _wait_for(ckpt.exists, job, "the first checkpoint")
        ranks = _rank_pids(job.pid)
        for pid in ranks.values():
            os.kill(pid, signal.SIGSTOP)
        saved = ckpt.read_bytes()
    finally:
        _kill_job(job, ranks)
    assert len(ranks) == 2 and not output.exists()
    ckpt.write_bytes(saved)
    state = torch.load(ckpt, weights_only=True)
    assert state["batch"] > 0 and state["world"] == 2 and len(state["rng"]) == len(state["partial"]) == 2
    done = torchrun(2, "-m", "alexcompress", *common, "-o", output, "--checkpoint-every", "2", "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    b = _tensors(output)
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit for bit, running statistics and dropout masks included
    assert not ckpt.exists()  # removed after the successful run
    ckpt.write_bytes(saved)
    done = torchrun(1, "-m", "alexcompress", *common, "-o", tmp_path / "x.pt", "--checkpoint", ckpt, "--resume")
    assert done.returncode != 0 and "resume it with the same number (1 now)" in done.stderr


def test_a_dead_rank_ends_the_job_with_no_output(squeeze, tmp_path):
    root, images, model = squeeze
    output = tmp_path / "out.pt"
    job = _start(["prune", model, "--data", images, "--epochs", "200", "--batch-size", "4", *CLI_ARGS, "-o", output], tmp_path / "err.txt")
    ranks: dict[int, int] = {}
    try:
        _wait_for(lambda: "step 2/" in (tmp_path / "err.txt").read_text(), job, "training to start")
        ranks = _rank_pids(job.pid)
        os.kill(ranks[1], signal.SIGKILL)
        code = job.wait(timeout=120)
        survivor_alive = _alive(ranks[0])
    finally:
        _kill_job(job, ranks)
    assert code != 0
    assert not survivor_alive  # torchrun ended rank 0 too: no rank left hanging
    ours = [line for line in (tmp_path / "err.txt").read_text().splitlines() if line.startswith("alexcompress: error: ")]
    assert len(ours) == 1 and ("another process of the job stopped" in ours[0] or "terminated by SIGTERM" in ours[0]), ours
    assert not output.exists() and not list(tmp_path.glob("*.tmp*"))


def test_distributed_eval_reports_global_counts(squeeze):
    root, images, model = squeeze
    single = subprocess.run(
        [sys.executable, "-m", "alexcompress", "eval", model, "--data", images, *CLI_ARGS[2:8], "--batch-size", "5"],
        capture_output=True,
        text=True,
    )
    assert single.returncode == 0, single.stderr
    done = torchrun(2, "-m", "alexcompress", "eval", model, "--data", images, *CLI_ARGS[2:8], "--batch-size", "5")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == single.stdout and "(64 images, 2 classes)" in done.stdout  # printed once, every image counted once


def test_commands_that_would_race_refuse_torchrun(tmp_path, monkeypatch):
    from .test_cli import one_error_line, run

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert "encode does not run under torchrun (only prune, quantize, eval, sensitivity, compress do)" in one_error_line(
        run("encode", "random:0:2", "-o", tmp_path / "c.dcz")
    )
    assert "under torchrun compress runs only its search (--data)" in one_error_line(
        run("compress", "random:0:2", "-o", tmp_path / "c.dcz")
    )
    assert "only retraining (--data), eval and sensitivity run data-parallel" in one_error_line(
        run("prune", "random:0:2", "-o", tmp_path / "p.pt")
    )
    assert not list(tmp_path.iterdir())


def _sensitivity(squeeze, curves: Path, *launcher: str) -> subprocess.CompletedProcess:
    root, images, model = squeeze
    args = ["sensitivity", model, "--data", images, "--keep-grid", "1,0.3,0.1", "--bits-grid", "6,3", "--save", curves]
    return subprocess.run([*launcher, "-m", "alexcompress", *args, *CLI_ARGS[2:8], "--batch-size", "8"], capture_output=True, text=True)


@pytest.fixture(scope="module")
def squeeze_curves(squeeze) -> Path:
    """The squeeze model's sensitivity curves, measured by one process."""
    curves = squeeze[0] / "curves.json"
    done = _sensitivity(squeeze, curves, sys.executable)
    assert done.returncode == 0, done.stderr
    return curves


def test_sensitivity_under_torchrun_matches_one_process(squeeze, squeeze_curves, tmp_path):
    """Each rank scores its shard of the validation images; the counts and divergences are summed, so
    the curves are one process's (top-1 exactly; the divergence to float32 rounding: the batches differ, and
    this random-init model's divergences are 1e-7..1e-5 nats), printed and written once."""
    done = _sensitivity(squeeze, tmp_path / "two.json", *TORCHRUN, "2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("64 validation images, 132 evaluations") == 1 and done.stderr.count("wrote ") == 1
    one, two = read_curves(squeeze_curves), read_curves(tmp_path / "two.json")
    assert (one.baseline, one.samples) == (two.baseline, two.samples) and len(one.layers) == len(two.layers) == 26
    for a, b in zip(one.layers, two.layers):
        assert (a.key, a.keep, a.bits) == (b.key, b.keep, b.bits)
        for mine, theirs in ((a.keep_kl, b.keep_kl), (a.bits_kl, b.bits_kl)):
            assert mine.keys() == theirs.keys() and all(mine[k] == pytest.approx(theirs[k], rel=1e-3, abs=1e-8) for k in mine)
    assert any(v > 0 for layer in one.layers for v in layer.keep_kl.values())  # the divergence was compared, not zeros


def test_measured_allocation_under_torchrun_matches_one_process(squeeze, squeeze_curves, tmp_path):
    """`prune --max-drop --val`: every rank walks the same binary search on all-reduced figures (a rank
    that read its own shard's top-1 would pick another allocation, or wait on a collective the others
    skipped), so two ranks write what one process writes and print it once."""
    root, images, model = squeeze
    curves = squeeze_curves
    common = ["prune", model, "--max-drop", "5", "--curves", curves, "--data", images, "--val", images]
    common += ["--epochs", "0", "--batch-size", "8", *CLI_ARGS[2:8]]
    single = subprocess.run([sys.executable, "-m", "alexcompress", *common, "-o", tmp_path / "one.pt"], capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-3000:]
    done = torchrun(2, "-m", "alexcompress", *common, "-o", tmp_path / "two.pt")
    assert done.returncode == 0, done.stderr[-3000:]

    def search(stderr: str) -> list[str]:
        return [line for line in stderr.splitlines() if "every layer" in line or line.startswith("measured:")]

    measured = search(single.stderr)
    assert "note: one validation image" not in single.stderr  # 1.56 pp an image, within --max-drop 5
    assert len(measured) > 2 and measured[-1].startswith("measured: ") and "; 64 validation images)" in measured[-1]
    assert search(done.stderr) == measured  # printed once (rank 0), every probe at the same figures
    a, b = torch.load(tmp_path / "one.pt", weights_only=True), torch.load(tmp_path / "two.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
