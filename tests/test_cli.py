"""The command line as a user meets it: exit codes, the lines printed, files written (or not), real pipes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torchvision
from typer.testing import CliRunner

from alexcompress.cli.app import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def one_error_line(result, code=1):
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("alexcompress: error: "), result.stderr
    return lines[0]


def test_prune_writes_pruned_state_dict_and_reports_on_stderr(tmp_path, files):
    out = tmp_path / "p.pt"
    result = run("prune", files["model"], "-o", out, "--sparsity", "0.9")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "Achieved sparsity: 90.00%" in result.stderr
    assert "fc6" in result.stderr and "threshold" in result.stderr
    state = torch.load(out, weights_only=True)
    torchvision.models.alexnet(num_classes=10).load_state_dict(state)
    weights = [v for k, v in state.items() if k.endswith(".weight")]
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros == round(0.9 * sum(w.numel() for w in weights))


def test_default_output_name_and_refusal_to_overwrite(tmp_path, files):
    model = tmp_path / "net.pt"
    model.write_bytes(files["model"].read_bytes())
    assert run("prune", model, "--rates", "fc8=0.5", "-q").exit_code == 0
    derived = tmp_path / "net.pruned.pt"
    assert derived.exists()
    before = derived.read_bytes()
    line = one_error_line(run("prune", model, "--rates", "fc8=0.5"))
    assert line == f"alexcompress: error: {derived}: already exists; use --force to overwrite it"
    assert derived.read_bytes() == before
    assert run("prune", model, "--rates", "fc8=0.25", "--force", "-q").exit_code == 0
    assert derived.read_bytes() != before
    line = one_error_line(run("prune", model, "-o", model, "--force"))
    assert "is the input file; refusing to overwrite it" in line


@pytest.mark.parametrize(
    "args, message",
    [
        (["prune", "{missing}"], "{missing}: no such file"),
        (["prune", "{text}"], "not a readable torch file"),
        (["prune", "{truncated}"], "truncated"),
        (["prune", "{foreign}", "--arch", "alexnet"], "not a torchvision alexnet state dict: missing keys"),
        (["prune", "{model}", "--sparsity", "1.5"], "sparsity must be in [0, 1), got 1.5"),
        (["quantize", "{model}", "--fc-bits", "9"], "--fc-bits must be between 1 and 8"),
        (["prune", "{model}", "--rates", "conv9=0.5"], "layer 'conv9' matches no compressible layer"),
        (["prune", "{model}", "-o", "{tmp}/no/such/dir/x.pt"], "does not exist"),
        (["prune", "{model}", "-o", "{text}/x.pt"], "is not a directory"),
        (["decode", "{model}"], "not a .dcz file"),
        (["encode", "{model}", "--index-bits", "13"], "--index-bits must be between 1 and 12"),
    ],
)
def test_bad_input_is_one_line_exit_1_and_no_output(tmp_path, files, args, message):
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes(files["model"].read_bytes()[:100_000])
    foreign = tmp_path / "resnet_like.pt"
    torch.save({"classifier.6.weight": torch.zeros(10, 4096), "fc.bias": torch.zeros(3)}, foreign)
    names = {
        "missing": tmp_path / "nope.pt",
        "text": text,
        "truncated": truncated,
        "foreign": foreign,
        "model": files["model"],
        "tmp": tmp_path,
    }
    before = set(tmp_path.iterdir())
    result = run(*[a.format(**names) for a in args])
    assert message.format(**names) in one_error_line(result)
    assert set(tmp_path.iterdir()) == before  # nothing written, not even a temporary file


def test_unwritable_directory(tmp_path, files, monkeypatch):
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == str(tmp_path) else real_access(path, mode))
    assert "is not writable" in one_error_line(run("prune", files["model"], "-o", tmp_path / "x.pt"))


def test_usage_errors_exit_2(files):
    assert run("prune", files["model"], "--sparsity", "0.5", "--preset", "paper").exit_code == 2
    assert run("prune", files["model"], "--bogus").exit_code == 2
    assert run("quantize", files["model"], "--init", "kmeans++").exit_code == 2
    bare = run()  # no command: the help, listing the commands, as a usage error
    assert bare.exit_code == 2 and "Usage" in bare.output and "compress" in bare.output


def test_encode_decode_info_round_trip(tmp_path, files, quantized10):
    dcz = tmp_path / "m.dcz"
    result = run("encode", files["quantized"], "-o", dcz)
    assert result.exit_code == 0, result.output
    assert "fc6" in result.stderr and result.stdout == ""
    decoded = tmp_path / "m.decoded.pt"
    assert run("decode", dcz, "-q").exit_code == 0  # default name derived from m.dcz
    state = torch.load(decoded, weights_only=True)
    assert all(state[k].equal(quantized10[k]) for k in quantized10)
    info = run("info", dcz)
    assert info.exit_code == 0
    assert f"{dcz.stat().st_size:,}" in info.stdout  # the size reported is the size on disk
    assert "total" in info.stdout and "conv1" in info.stdout
    verbose = run("info", dcz, "--verbose")
    assert "Huffman code" in verbose.stdout and "top 5 of 32 codes" in verbose.stdout


def test_damaged_dcz_is_one_line(tmp_path, files):
    dcz = tmp_path / "m.dcz"
    run("encode", files["quantized"], "-o", dcz, "-q")
    data = bytearray(dcz.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dcz.write_bytes(bytes(data))
    assert "CRC-32 mismatch" in one_error_line(run("decode", dcz, "-o", tmp_path / "x.pt"))
    dcz.write_bytes(bytes(data[:1000]))
    assert "truncated" in one_error_line(run("info", dcz))
    assert not (tmp_path / "x.pt").exists()


def test_compress_random_keyword_with_verify(tmp_path):
    out = tmp_path / "a.dcz"
    result = run("compress", "random", "-o", out, "--verify")  # the 1000-class AlexNet, paper preset
    assert result.exit_code == 0, result.output
    assert "verified: the file decodes bit for bit" in result.stderr
    assert "after P + Q + Huffman: the file on disk" in result.stderr
    assert f"{out.stat().st_size / 1e6:,.3f} MB" in result.stderr
    assert "fc6" in result.stderr and "preset 'paper'" in result.stderr
    decoded = tmp_path / "a.pt"
    assert run("decode", out, "-o", decoded, "-q").exit_code == 0
    torchvision.models.alexnet(num_classes=1000).load_state_dict(torch.load(decoded, weights_only=True))


def test_init_writes_a_loadable_model(tmp_path):
    out = tmp_path / "alexnet.pt"
    assert run("init", "-o", out, "--num-classes", "7", "--seed", "3", "-q").exit_code == 0
    torchvision.models.alexnet(num_classes=7).load_state_dict(torch.load(out, weights_only=True))


def alexcompress(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "alexcompress", *map(str, args)], capture_output=True, **kwargs)


def test_shell_pipeline_equals_steps_through_files(tmp_path, files):
    piped = tmp_path / "piped.pt"
    pipeline = (
        f"{sys.executable} -m alexcompress prune {files['model']} -o - --sparsity 0.9 -q"
        f" | {sys.executable} -m alexcompress quantize - -o {piped} -q"
    )
    done = subprocess.run(["bash", "-o", "pipefail", "-c", pipeline], capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    step = tmp_path / "step.pruned.pt"
    assert alexcompress("prune", files["model"], "-o", step, "--sparsity", "0.9", "-q").returncode == 0
    assert alexcompress("quantize", step, "-o", tmp_path / "step.q.pt", "-q").returncode == 0
    assert piped.read_bytes() == (tmp_path / "step.q.pt").read_bytes()


def test_stdin_to_dcz_on_stdout_and_logs_stay_on_stderr(files, tmp_path):
    done = alexcompress("encode", "-", "-o", "-", stdin=open(files["quantized"], "rb"))
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout[:4] == b"\x89DCZ"
    assert b"fc6" in done.stderr
    (tmp_path / "x.dcz").write_bytes(done.stdout)
    done = alexcompress("decode", tmp_path / "x.dcz", "-o", tmp_path / "x.pt")
    assert done.returncode == 0
    assert (tmp_path / "x.pt").read_bytes() == files["quantized"].read_bytes()


def test_reader_closing_the_pipe_is_one_line(files):
    pipeline = f"{sys.executable} -m alexcompress prune {files['model']} -o - -q | head -c 100 > /dev/null"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", pipeline], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr == "alexcompress: error: output pipe closed before all data was written\n"


def test_bad_input_in_a_subprocess_has_no_traceback(tmp_path):
    done = alexcompress("prune", tmp_path / "missing.pt")
    assert done.returncode == 1
    assert done.stderr.decode().strip() == f"alexcompress: error: {tmp_path / 'missing.pt'}: no such file"


def test_same_input_and_options_give_identical_files_across_processes(tmp_path):
    args = ["compress", "random:5:10", "--sparsity", "0.9", "--bits", "5", "--init", "random", "--seed", "3", "-q"]
    children = [
        subprocess.Popen([sys.executable, "-m", "alexcompress", *args, "-o", str(tmp_path / f"{i}.dcz")], stderr=subprocess.PIPE)
        for i in range(2)
    ]
    for child in children:
        assert child.wait(timeout=600) == 0, child.stderr.read().decode()
    first, second = (tmp_path / "0.dcz").read_bytes(), (tmp_path / "1.dcz").read_bytes()
    assert first == second and first[:4] == b"\x89DCZ"


def test_eval_prune_retrain_quantize_finetune_through_the_cli(tmp_path):
    from .test_train import make_image_folder

    data = make_image_folder(tmp_path / "images")
    small = ["--image-size", "64", "--resize", "64", "--batch-size", "4", "--device", "cpu"]
    result = run("eval", "random:0:2", "--data", data, *small)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("random:0:2: top-1 ") and "(8 images, 2 classes)" in result.stdout
    pruned = tmp_path / "p.pt"
    result = run(
        "prune", "random:0:2", "-o", pruned, "--sparsity", "0.95", "--data", data, "--epochs", "1", "--iterations", "2", "--regrow", *small
    )
    assert result.exit_code == 0, result.output
    assert "round 2/2" in result.stderr and "sparsity 95.00%" in result.stderr
    assert "round 2: regrow: " in result.stderr  # --regrow: at the second round's pruning (one epoch per round)
    assert not (tmp_path / "p.pt.ckpt").exists()  # removed after the successful run
    quantized = tmp_path / "q.pt"
    result = run("quantize", pruned, "-o", quantized, "--bits", "4", "--data", data, "--epochs", "1", *small)
    assert result.exit_code == 0, result.output
    state = torch.load(quantized, weights_only=True)
    for key in ("features.0.weight", "classifier.1.weight"):
        assert state[key][state[key] != 0].unique().numel() <= 16
    assert run("encode", quantized, "-o", tmp_path / "q.dcz", "-q").exit_code == 0
    result = run("eval", tmp_path / "q.dcz", "--data", data, *small)
    assert result.exit_code == 0 and "top-5 100.00%" in result.stdout  # 2 classes: top-5 is everything


def test_training_input_errors(tmp_path):
    # the option checks below come before the images are read; the outputs stay outside --data (refused inside)
    assert "no such directory" in one_error_line(run("eval", "random:0:2", "--data", tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    assert "not an ImageFolder tree" in one_error_line(run("eval", "random:0:2", "--data", tmp_path / "empty"))
    assert "no checkpoint to resume from" in one_error_line(
        run("prune", "random:0:2", "-o", tmp_path / "x.pt", "--data", tmp_path / "empty", "--resume")
    )
    model = tmp_path / "m.pt"
    assert run("init", "--num-classes", "2", "-o", model, "-q").exit_code == 0
    before = model.read_bytes()
    line = one_error_line(run("prune", model, "-o", tmp_path / "p.pt", "--data", tmp_path / "empty", "--checkpoint", model))
    assert line.endswith("m.pt: is the input file; refusing to overwrite it (choose another --checkpoint)") and model.read_bytes() == before
    (tmp_path / "p.pt.ckpt").write_bytes(b"an earlier run")
    assert "a checkpoint already exists: --resume continues it" in one_error_line(
        run("prune", model, "-o", tmp_path / "p.pt", "--data", tmp_path / "empty")
    )
    assert (tmp_path / "p.pt.ckpt").read_bytes() == b"an earlier run"
    assert "need validation data" in one_error_line(
        run("prune", model, "-o", tmp_path / "q.pt", "--data", tmp_path / "empty", "--patience", "2")
    )
    assert "not both" in one_error_line(
        run("prune", model, "-o", tmp_path / "q.pt", "--data", tmp_path / "empty", "--val", tmp_path / "empty", "--val-fraction", "0.1")
    )
    assert "momentum must be in [0, 1)" in one_error_line(
        run("prune", model, "-o", tmp_path / "q.pt", "--data", tmp_path / "empty", "--momentum", "1.5")
    )
    assert run("prune", model, "-o", tmp_path / "q.pt", "--data", tmp_path / "empty", "--augment", "rotate").exit_code == 2
    assert "--iterations needs --data" in one_error_line(run("prune", "random:0:2", "--iterations", "3", "-o", tmp_path / "y.pt"))


def test_retraining_in_a_batch_job_logs_plain_lines_and_keeps_the_best_epoch(tmp_path):
    """stderr is a pipe here, as in a batch job or CI: progress comes as plain lines while it runs."""
    from .test_train import make_image_folder

    data = make_image_folder(tmp_path / "images", per_class=8)
    out = tmp_path / "p.pt"
    small = ["--image-size", "64", "--resize", "64", "--batch-size", "4", "--device", "cpu"]
    done = alexcompress(
        "prune",
        "random:0:2",
        "-o",
        out,
        "--sparsity",
        "0.9",
        "--data",
        data,
        "--epochs",
        "2",
        "--val-fraction",
        "0.25",
        "--log-every",
        "1",
        "--schedule",
        "cosine",
        "--warmup",
        "0.5",
        *small,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    steps = [line for line in lines if line.startswith("retrain epoch 1/2 step ")]
    assert len(steps) == 3 and all("img/s" in line and "ETA" in line for line in steps)  # 12 training images, batches of 4
    assert sum(line.startswith("retrain epoch") and " done: " in line and "val top-1" in line for line in lines) == 2
    assert any(line.startswith("retrain: keeping ") and "validation top-1" in line for line in lines)
    assert out.exists() and not (tmp_path / "p.pt.ckpt").exists()


def test_library_rules_name_the_flags(tmp_path):
    """A range is checked once, by the library, naming its field; the command line names the flag."""
    (tmp_path / "empty").mkdir()
    training = ["-o", tmp_path / "x.pt", "--data", tmp_path / "empty"]
    assert one_error_line(run("prune", "random:0:2", *training, "--warmup", "5")).endswith(
        "--warmup must be between 0 and the 1 epochs, got 5.0"
    )
    assert one_error_line(run("prune", "random:0:2", *training, "--batch-size", "0")).endswith(
        "--batch-size must be between 1 and 1048576, got 0"
    )
    assert one_error_line(run("quantize", "random:0:2", "--seed", "-1", "-o", tmp_path / "q.pt")).endswith(
        "--seed must be between 0 and 9223372036854775807, got -1"
    )
    assert one_error_line(run("eval", "random:0:2", "--data", tmp_path / "empty", "--limit", "0")).endswith(
        "--limit must be at least 1, got 0"
    )
