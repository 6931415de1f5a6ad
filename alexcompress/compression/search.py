"""The search for the smallest file within an accuracy budget (`compress --data ... --max-drop PP`): every
stage of the paper, with each choice made on validation images rather than by hand.

1. The sensitivity curves of the model as given, on the validation images (`sensitivity.measure`), or
   curves measured before.
2. *Rungs* along the allocation path (`sensitivity._Planner.path`): rung 1 is the smallest allocation
   whose layers, pruned and quantized together, stay within the budget before any retraining
   (`allocate_measured`); each next rung starts from the rung with the smallest file within the budget
   and climbs by a step (`_step`): x2 to begin with, the square root of the last step after a rung that
   failed (a bisection), x1.4 at most after one that passed with little room. A rung prunes *the best
   rung's retrained weights* further to its keep rates and retrains them (masked): the rungs are the
   rounds of iterative pruning, each building on the one before.
3. At every rung, quantization candidates, each quantized, encoded (its real size) and scored on the
   validation images: k-means at the allocation's widths, and ECSQ at the widths + 1 bit with each of the
   rate weights (ECSQ needs room to drop codes: at the allocation's own widths it gains nothing; measured
   112.35x-112.68x against k-means' 112.4x).
4. The climb stops after `rungs` rungs, or when its step falls below 10%. The chosen candidate is the smallest file within the budget (files within 1% of each other: the lower validation
   loss), and its centroids are fine-tuned (`finetune_epochs`, at a tenth of the learning rate).

With `target_ratio` instead, candidates must reach the ratio (their real file, not a prediction) and the
most accurate one is chosen (top-1, then loss); the ladder climbs until one does.

Everything the search has done lives in a work folder (`search.json` and each rung's weights; training
checkpoints while a rung retrains), written as it goes: a search interrupted by Ctrl-C or a crash resumes
where it stopped, with the same result as an unbroken one (every step is seeded). Under torchrun every
rank runs the same steps (retraining and scoring data-parallel); rank 0 alone writes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from alexcompress.compression.specs import PruneSpec, QuantizeSpec, measure_allocation, prune as prune_state
from alexcompress.errors import AlexCompressError, check_range

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from alexcompress.compression.sensitivity import Allocation, Curves
    from alexcompress.train.config import TrainConfig
    from alexcompress.train.log import TrainingLog

FORMAT = "alexcompress-search-1"
RATE_WEIGHTS = (0.001, 0.002, 0.004)  # ECSQ's rate weights tried (0.002 -> 0.004 can be a cliff: chosen on validation)
WIDEN = (1,)  # ECSQ's widths: the allocation's + these (+2 gave no smallest file in a 5-rung digits search)
MAX_RUNGS = 6
GROWTH = (1.4, 2.0)  # the next rung's predicted ratio over the best one's: (little room left, room to spare)
NEAR = 0.01  # files within 1% of the smallest are judged by their validation loss
MIN_STEP = 1.1  # the climb stops when its step falls below 10%


@dataclass(frozen=True)
class SearchSpec:
    """What to search for: the smallest file within `max_drop` percentage points of validation top-1 of the
    model as given, or the most accurate file of at least `target_ratio`."""

    max_drop: Optional[float] = None
    target_ratio: Optional[float] = None
    rungs: int = MAX_RUNGS
    rate_weights: tuple[float, ...] = RATE_WEIGHTS
    widen: tuple[int, ...] = WIDEN
    finetune_epochs: Optional[int] = None  # None: the retraining's epochs
    seed: int = 0
    keep_grid: Optional[tuple[float, ...]] = None  # the sensitivity curves' points (None: sensitivity's own grids)
    bits_grid: Optional[tuple[int, ...]] = None

    def check(self) -> None:
        if (self.max_drop is None) == (self.target_ratio is None):
            raise AlexCompressError("the search needs --max-drop or --target-ratio (one of them)")
        if self.max_drop is not None:
            check_range("max_drop", self.max_drop, 0, 100)
        if self.target_ratio is not None and not (math.isfinite(self.target_ratio) and self.target_ratio > 1):
            raise AlexCompressError(f"--target-ratio must be a number above 1, got {self.target_ratio}")
        check_range("rungs", self.rungs, 1, 100)
        for weight in self.rate_weights:
            check_range("rate_weight", weight, 0, 100)
        if self.finetune_epochs is not None:
            check_range("finetune_epochs", self.finetune_epochs, 0, 100_000)


@dataclass
class Candidate:
    """One quantization of one rung, encoded and scored on the validation images (before fine-tuning)."""

    rung: int
    label: str  # "k-means +0", "ECSQ +1, rate weight 0.002"
    quantizer: str
    widths: dict[str, int]
    rate_weight: float
    size: int  # bytes of its .dcz
    ratio: float
    top1: float
    loss: float
    drop: float  # percentage points of validation top-1 below the model as given

    def spec(self, seed: int) -> QuantizeSpec:
        return QuantizeSpec(layer_bits=dict(self.widths), quantizer=self.quantizer, rate_weight=self.rate_weight, seed=seed)


@dataclass
class Rung:
    index: int
    rates: dict[str, float]
    bits: dict[str, int]
    predicted_ratio: float
    trained: bool = False
    candidates: list[Candidate] = field(default_factory=list)
    parent: int = 0  # the rung whose retrained weights this one prunes further (0: the model as given)


def _rung_of(saved: Any, where: str) -> Rung:
    """A rung as the work folder's record holds it, every field checked (the file may have been edited)."""
    try:
        rung = Rung(**saved)
        rung.candidates = [Candidate(**c) for c in rung.candidates]
        _typed(rung, where)
        for candidate in rung.candidates:
            _typed(candidate, where)
    except (TypeError, ValueError, AttributeError) as exc:
        raise AlexCompressError(f"{where}: not a search record written by this version ({' '.join(str(exc).split())[:120]})") from None
    return rung


def _typed(record: Any, where: str) -> None:
    """Each field of a rung or candidate of the type it is declared with (ints where floats are declared too)."""
    kinds = {"int": int, "float": (int, float), "str": str, "bool": bool, "dict[str, int]": dict, "dict[str, float]": dict}
    for f in dataclasses.fields(record):
        value, kind = getattr(record, f.name), kinds.get(str(f.type).replace("typing.", ""))
        if kind is None:
            continue
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise ValueError(f"field {f.name!r} is {type(value).__name__}")
        if isinstance(value, dict) and not all(isinstance(k, str) and isinstance(v, (int, float)) for k, v in value.items()):
            raise ValueError(f"field {f.name!r} holds a value that is not a number")


@dataclass
class SearchResult:
    """The file the search chose, and everything it tried."""

    data: bytes
    chosen: Candidate
    top1: float  # validation top-1 of the chosen file after fine-tuning
    loss: float
    reference: tuple[float, float]  # (top-1, loss) of the model as given, on the validation images
    rungs: list[Rung]
    curves: "Curves"
    validation_images: int

    @property
    def candidates(self) -> list[Candidate]:
        return [c for rung in self.rungs for c in rung.candidates]

    @property
    def drop(self) -> float:
        return 100 * (self.reference[0] - self.top1)


@dataclass
class Hooks:
    """Where the search reports (all optional)."""

    note: Callable[[str], None] = lambda text: None
    candidate: Callable[[Candidate], None] = lambda c: None
    log: "Optional[TrainingLog]" = None


def search(
    state: Mapping[str, Any],
    arch: str,
    dataset: "Dataset",
    validation: "Dataset",
    config: "TrainConfig",
    spec: SearchSpec,
    work: "str | os.PathLike[str]",
    *,
    curves: "Optional[Curves]" = None,
    resume: bool = False,
    sensitivity: Optional[Callable[[Mapping[str, Any]], "Curves"]] = None,
    encode: Callable[[Mapping[str, Any], QuantizeSpec], bytes],
    hooks: Optional[Hooks] = None,
) -> SearchResult:
    """Run (or resume) the search; see the module's text. `sensitivity(state)` measures curves when none
    are given; `encode(state, spec)` makes a quantized state's `.dcz` (with the options its header keeps)."""
    from alexcompress.compression.sensitivity import check_allocation, least_compression
    from alexcompress.train.distributed import current

    spec.check()
    hooks = hooks or Hooks()
    folder = Work(Path(work), writes=current().is_main)
    fingerprint = _fingerprint(state, config, spec, len(validation))  # type: ignore[arg-type]
    record = folder.open(fingerprint, resume)
    reference = _score(state, arch, validation, config)
    one_image = 100 / max(len(validation), 1)  # type: ignore[arg-type]
    if spec.max_drop is not None and one_image > spec.max_drop:
        hooks.note(
            f"note: one validation image is {one_image:.2f} pp ({len(validation):,} images), more than --max-drop "  # type: ignore[arg-type]
            f"{spec.max_drop:g}: no drop at all is allowed; give more validation images for a finer budget"
        )
    hooks.note(f"search: the model as given scores {reference[0]:.2%} on {len(validation):,} validation images (loss {reference[1]:.4f})")  # type: ignore[arg-type]
    curves = _curves(folder, record, curves, sensitivity, state, hooks)
    check_allocation(least_compression(curves), state, arch)  # curves of this model
    rungs = [_rung_of(r, str(folder.path / "search.json")) for r in record["rungs"]]
    for n in range(1, spec.rungs + 1):
        if n > len(rungs):
            step = _next_rung(curves, rungs, spec, state, arch, validation, config)
            if step is None:
                break
            allocation, parent = step
            rungs.append(Rung(n, dict(allocation.rates), dict(allocation.bits), allocation.predicted_ratio, parent=parent))
            folder.save(record, rungs)
        rung = rungs[n - 1]
        weights = None
        if not rung.trained:
            start = state if rung.parent == 0 else folder.load_state(folder.path / f"rung-{rung.parent}.pt", arch)
            weights = _retrained(folder, rung, start, arch, dataset, validation, config, hooks)
            rung.trained = True
            folder.save(record, rungs)
        if len(rung.candidates) < len(_options(rung, spec)):
            if weights is None:
                weights = folder.load_state(folder.path / f"rung-{rung.index}.pt", arch)
            _candidates(folder, record, rungs, rung, weights, arch, validation, config, spec, reference, encode, hooks)
    chosen = _choose([c for r in rungs for c in r.candidates], spec)
    if chosen is None:
        best = max((c for r in rungs for c in r.candidates), key=lambda c: (c.top1, -c.loss, c.ratio))
        want = f"within {spec.max_drop:g} pp" if spec.max_drop is not None else f"of {spec.target_ratio:g}x"
        raise AlexCompressError(
            f"no file {want} was found: the nearest was {best.ratio:.1f}x at {best.drop:+.2f} pp below the model "
            f"(rung {best.rung}, {best.label}); a looser budget or more --rungs with --resume continue from {folder.path}"
        )
    data, top1, loss = _finetuned(folder, record, chosen, arch, dataset, validation, config, spec, encode, hooks)
    folder.done()
    return SearchResult(data, chosen, top1, loss, reference, rungs, curves, len(validation))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ the steps


def _score(state: Mapping[str, Any], arch: str, validation: "Dataset", config: "TrainConfig") -> tuple[float, float]:
    from alexcompress.models.state import build_model
    from alexcompress.train.distributed import rank_device
    from alexcompress.train.trainer import validation_score

    model = build_model(state, arch).to(rank_device(config.device))
    result = validation_score(model, validation, config)
    return result.top1, result.loss


def _curves(folder: "Work", record: dict, curves: "Optional[Curves]", sensitivity: Any, state: Any, hooks: Hooks) -> "Curves":
    from alexcompress.compression.sensitivity import Curves, warning

    if record.get("curves"):  # a resumed search keeps the curves its rungs were chosen from
        curves = Curves.from_json(json.dumps(record["curves"]), str(folder.path / "search.json"))
        hooks.note("search: sensitivity curves from the work folder")
    if curves is None:
        if sensitivity is None:
            raise AlexCompressError("the search needs sensitivity curves: pass curves or a sensitivity measurement")
        hooks.note("search: measuring the sensitivity curves on the validation images")
        curves = sensitivity(state)
        text = warning(curves)
        if text:
            hooks.note(text)
    if not record.get("curves"):
        record["curves"] = json.loads(curves.to_json())
        folder.write(record)
    return curves


def _next_rung(
    curves: "Curves", rungs: list[Rung], spec: SearchSpec, state: Any, arch: str, validation: "Dataset", config: "TrainConfig"
) -> "Optional[tuple[Allocation, int]]":
    """The next rung's allocation and the rung it prunes from, or None when the search is done.

    Rung 1: within the budget before any retraining (with a target: the first allocation predicted to reach
    it). Then, with a budget: from the rung with the smallest file within it, up by `_step`, until the
    step falls below MIN_STEP (an allocation already tried from the same rung halves the step again). With
    a target: up from the last rung until a file reaches it."""
    from alexcompress.compression.sensitivity import _Planner

    path = _Planner(curves).path()
    if not rungs:
        if spec.target_ratio is not None:
            return next((a for a in path if a.predicted_ratio >= spec.target_ratio), path[-1]), 0
        try:
            return measure_allocation(state, arch, curves, None, validation, config, max_drop=spec.max_drop), 0
        except AlexCompressError:  # even the least compression loses more before retraining: retraining may win it back
            return path[0], 0
    if spec.target_ratio is not None:
        last = rungs[-1]
        if any(_fits(c, spec) for c in last.candidates):
            return None
        best = max((c.ratio for c in last.candidates), default=last.predicted_ratio)
        want = last.predicted_ratio * max(GROWTH[0], 1.02 * spec.target_ratio / max(best, 1e-9))
        found = next((a for a in path if a.predicted_ratio >= want), None)
        return None if found is None else (found, last.index)
    assert spec.max_drop is not None
    passing = [r for r in rungs if any(_fits(c, spec) for c in r.candidates)]
    if not passing:
        return None
    best = max(passing, key=lambda r: max(c.ratio for c in r.candidates if _fits(c, spec)))
    tried = {r.predicted_ratio for r in rungs if r.parent == best.index}
    step = _step(rungs, passing, spec)
    while step >= MIN_STEP:
        found = next((a for a in path if a.predicted_ratio >= best.predicted_ratio * step), None)
        if found is None and path[-1].predicted_ratio >= MIN_STEP * best.predicted_ratio:  # the path ends sooner: its end
            found = path[-1]
        if found is None:
            return None
        if found.predicted_ratio not in tried:
            return found, best.index
        step = math.sqrt(step)  # the path is discrete: this step lands where a rung already stood
    return None


def _step(rungs: list[Rung], passing: list[Rung], spec: SearchSpec) -> float:
    """The next rung's predicted ratio over the best rung's: x2 (GROWTH[1]) to begin with; after a rung that
    failed, the square root of the step it took (a bisection); after one that passed, the same step again,
    at most x1.4 (GROWTH[0]) when it had little room left (a drop above half the budget)."""
    step = GROWTH[1]
    for rung in rungs:
        spare = rung in passing and min(c.drop for c in rung.candidates) <= spec.max_drop / 2  # type: ignore[operator]
        if rung.parent == 0:  # rung 1 took no step
            step = step if spare or rung not in passing else GROWTH[0]
            continue
        taken = rung.predicted_ratio / _parent_ratio(rungs, rung)
        step = math.sqrt(taken) if rung not in passing else taken if spare else min(taken, GROWTH[0])
    return step


def _parent_ratio(rungs: list[Rung], rung: Rung) -> float:
    return next(r.predicted_ratio for r in rungs if r.index == rung.parent)


def _retrained(
    folder: "Work",
    rung: Rung,
    previous: Mapping[str, Any],
    arch: str,
    dataset: "Dataset",
    validation: "Dataset",
    config: "TrainConfig",
    hooks: Hooks,
) -> Mapping[str, Any]:
    """The rung's weights: the previous rung's pruned to its keep rates, then retrained (masked) and saved."""
    from alexcompress.train.trainer import retrain_pruned

    origin = "the model as given" if rung.parent == 0 else f"rung {rung.parent}'s retrained weights"
    hooks.note(f"search: rung {rung.index}: {origin} pruned to the allocation of {rung.predicted_ratio:.1f}x (predicted), retraining")
    pruned = prune_state(previous, PruneSpec(rates=dict(rung.rates)), arch=arch).state
    checkpoint = folder.path / f"rung-{rung.index}.ckpt"
    run = dataclasses.replace(config, checkpoint=str(checkpoint), resume=checkpoint.exists(), keep_checkpoint=False)
    state = retrain_pruned(pruned, arch, dataset, run, validation=validation, log=hooks.log)
    folder.save_state(folder.path / f"rung-{rung.index}.pt", state)
    return state


def _options(rung: Rung, spec: SearchSpec) -> list[tuple[str, str, dict[str, int], float]]:
    """(label, quantizer, widths, rate weight) of every quantization a rung tries."""
    out = [("k-means +0", "kmeans", dict(rung.bits), 0.0)]
    for extra in spec.widen:
        widths = {k: min(8, b + extra) for k, b in rung.bits.items()}
        for weight in spec.rate_weights:
            out.append((f"ECSQ +{extra}, rate weight {weight:g}", "ecsq", widths, weight))
    return out


def _candidates(
    folder: "Work",
    record: dict,
    rungs: list[Rung],
    rung: Rung,
    state: Mapping[str, Any],
    arch: str,
    validation: "Dataset",
    config: "TrainConfig",
    spec: SearchSpec,
    reference: tuple[float, float],
    encode: Callable[[Mapping[str, Any], QuantizeSpec], bytes],
    hooks: Hooks,
) -> None:
    from alexcompress.codec.accounting import original_bytes
    from alexcompress.codec.container import parse_header

    for label, quantizer, widths, weight in _options(rung, spec)[len(rung.candidates) :]:
        quant = QuantizeSpec(layer_bits=widths, quantizer=quantizer, rate_weight=weight, seed=spec.seed)
        quantized = quant.apply(state, arch=arch).state
        data = encode(quantized, quant)
        top1, loss = _score(quantized, arch, validation, config)
        ratio = original_bytes(parse_header(data)) / len(data)
        candidate = Candidate(rung.index, label, quantizer, widths, weight, len(data), ratio, top1, loss, 100 * (reference[0] - top1))
        rung.candidates.append(candidate)
        folder.save(record, rungs)
        hooks.candidate(candidate)


def _fits(candidate: Candidate, spec: SearchSpec) -> bool:
    if spec.max_drop is not None:
        return candidate.drop <= spec.max_drop + 1e-9
    return candidate.ratio >= spec.target_ratio  # type: ignore[operator]


def _choose(candidates: Sequence[Candidate], spec: SearchSpec) -> Optional[Candidate]:
    """The smallest file within the budget (near-ties: the lower validation loss); with a target ratio, the
    most accurate file that reaches it (top-1, then loss, then the smaller file)."""
    fits = [c for c in candidates if _fits(c, spec)]
    if not fits:
        return None
    if spec.target_ratio is not None:
        return max(fits, key=lambda c: (c.top1, -c.loss, c.ratio))
    smallest = min(c.size for c in fits)
    near = [c for c in fits if c.size <= smallest * (1 + NEAR)]
    return min(near, key=lambda c: (c.loss, c.size))


def _finetuned(
    folder: "Work",
    record: dict,
    chosen: Candidate,
    arch: str,
    dataset: "Dataset",
    validation: "Dataset",
    config: "TrainConfig",
    spec: SearchSpec,
    encode: Callable[[Mapping[str, Any], QuantizeSpec], bytes],
    hooks: Hooks,
) -> tuple[bytes, float, float]:
    """The chosen candidate quantized again from its rung's weights (seeded: the same codes), its centroids
    fine-tuned, encoded and scored; or what an earlier run saved."""
    from alexcompress.train.trainer import finetune_centroids

    final, which = folder.path / "final.dcz", {"rung": chosen.rung, "label": chosen.label}
    done = record.get("final")
    if isinstance(done, dict) and {k: done.get(k) for k in which} == which and final.exists():
        top1, loss = done.get("top1"), done.get("loss")
        if isinstance(top1, (int, float)) and isinstance(loss, (int, float)):
            return final.read_bytes(), float(top1), float(loss)
    quant = chosen.spec(spec.seed)
    state = quant.apply(folder.load_state(folder.path / f"rung-{chosen.rung}.pt", arch), arch=arch).state
    epochs = config.epochs if spec.finetune_epochs is None else spec.finetune_epochs
    if epochs:
        hooks.note(f"search: fine-tuning the centroids of rung {chosen.rung}'s {chosen.label} ({chosen.ratio:.1f}x)")
        checkpoint = folder.path / "centroids.ckpt"
        run = dataclasses.replace(
            config, epochs=epochs, lr=config.lr / 10, checkpoint=str(checkpoint), resume=checkpoint.exists(), keep_checkpoint=False
        )
        state = finetune_centroids(state, arch, dataset, run, validation=validation, log=hooks.log)
    data = encode(state, quant)
    top1, loss = _score(state, arch, validation, config)
    record["final"] = {**which, "top1": top1, "loss": loss}
    folder.write_bytes(final, data)
    folder.write(record)
    return data, top1, loss


# ------------------------------------------------------------------------------------------ the work folder


def _fingerprint(state: Mapping[str, Any], config: "TrainConfig", spec: SearchSpec, validation: int) -> dict[str, Any]:
    """What a resumed search must share with the one it continues: the model's bytes, the settings."""
    from alexcompress.models.state import as_numpy

    digest = hashlib.blake2b(digest_size=16)
    for key, value in state.items():
        array = as_numpy(value)
        digest.update(key.encode() + str(array.dtype).encode() + str(array.shape).encode())
        digest.update(memoryview(array.reshape(-1).view("uint8")))
    skip = ("checkpoint", "resume", "keep_checkpoint", "device", "workers")
    free = ("max_drop", "target_ratio", "rungs")  # a resumed search may loosen its budget or climb further
    return {
        "model": digest.hexdigest(),
        "train": {k: v for k, v in asdict(config).items() if k not in skip},
        "search": {k: v for k, v in asdict(spec).items() if k not in free},
        "validation_images": validation,
    }


class Work:
    """The search's folder: `search.json` (the record, rewritten atomically after every step) and each
    rung's weights."""

    def __init__(self, path: Path, *, writes: bool = True) -> None:
        self.path, self.writes = path, writes

    def open(self, fingerprint: dict[str, Any], resume: bool) -> dict:
        from alexcompress import jsontext
        from alexcompress.fileio import check_folder

        record_path = self.path / "search.json"
        if not resume and not self.writes:  # another rank of a torchrun: rank 0 creates the folder
            return {"format": FORMAT, "fingerprint": fingerprint, "rungs": []}
        check_folder(str(self.path), resume=resume, option="work folder")
        if not resume:
            try:
                self.path.mkdir()
            except OSError as exc:
                raise AlexCompressError(f"{self.path}: cannot create the work folder ({exc.strerror or exc})") from None
            record = {"format": FORMAT, "fingerprint": fingerprint, "rungs": []}
            self.write(record)
            return record
        if not record_path.is_file():
            raise AlexCompressError(f"{self.path}: no search to resume here (no search.json)")
        from alexcompress.fileio import read_file, read_upto

        raw = read_file(str(record_path), lambda handle: read_upto(handle, MAX_RECORD_BYTES + 1))
        if len(raw) > MAX_RECORD_BYTES:
            raise AlexCompressError(f"{record_path}: larger than {MAX_RECORD_BYTES >> 20} MB, not a search record (a few KB)")
        try:
            record = jsontext.loads(raw, 12)
        except ValueError as exc:
            raise AlexCompressError(f"{record_path}: not a search record ({exc})") from None
        if not isinstance(record, dict) or record.get("format") != FORMAT or not isinstance(record.get("rungs"), list):
            raise AlexCompressError(f"{record_path}: not a search record written by this version")
        expected, found = json.loads(json.dumps(fingerprint)), record.get("fingerprint")
        if found != expected:
            differ = [k for k in expected if not isinstance(found, dict) or found.get(k) != expected[k]]
            raise AlexCompressError(
                f"{self.path}: a search of another model or other settings ({', '.join(differ)} differ); remove it to start over"
            )
        return record

    def write(self, record: dict) -> None:
        self.write_bytes(self.path / "search.json", (json.dumps(record, indent=1) + "\n").encode())

    def save(self, record: dict, rungs: list[Rung]) -> None:
        record["rungs"] = [asdict(r) for r in rungs]
        self.write(record)

    def write_bytes(self, path: Path, data: bytes) -> None:
        from alexcompress.fileio import write_atomic

        if self.writes:
            write_atomic(path, data)

    def save_state(self, path: Path, state: Mapping[str, Any]) -> None:
        from alexcompress.models.state import state_dict_bytes

        self.write_bytes(path, state_dict_bytes(state))

    def load_state(self, path: Path, arch: str) -> Any:
        from alexcompress.models.state import load_state_dict

        return load_state_dict(str(path), arch=arch).state

    def done(self) -> None:
        """The search finished: its folder goes (the rungs' weights are the model's size each)."""
        if self.writes:
            shutil.rmtree(self.path, ignore_errors=True)


MAX_RECORD_BYTES = 1 << 24
