"""Context-modelled rANS over small integer alphabets, vectorised over lanes in numpy (no per-symbol loop).

A stream of n symbols is cut into W = ceil(n / chunk) consecutive runs ("lanes") of `chunk` symbols (the
last may be shorter). Each lane is an independent 32-bit rANS coder (Duda 2013; Giesen's byte-aligned form
with 16-bit words) whose probabilities are 14-bit integer frequencies, so probabilities need not be powers
of two. Every step codes one symbol of each lane at once: a step is a handful of numpy operations over W
lanes, and a stream costs `chunk` steps however long it is.

The model of a symbol is chosen by its *context*: the class of the previous symbol of its lane (the first
symbol of a lane has class 0). Classes are contiguous ranges of the alphabet, given by their start symbols
(`boundaries`). A previous-symbol context is a sequential dependency, yet decoding stays vectorised: all
lanes advance together, and step t's contexts are step t - 1's symbols.

Layout of a coded stream (`docs/FORMAT.md`, "rANS streams"): the W final encoder states (uint32, little-
endian), the W lanes' word counts (uint16), then each lane's 16-bit renormalisation words (uint16) in the
order it reads them. A decoder starts each lane at its state and must end every lane at exactly STATE_LOW
having read exactly its own words; anything else is a corrupt stream. Since every lane reads its own words,
any number of streams - all those of a file - decode together in one loop of at most MAX_CHUNK steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alexcompress.errors import DczError

PRECISION = 14  # frequencies of one context sum to 2**PRECISION
TOTAL = 1 << PRECISION
STATE_LOW = 1 << 16  # lane states live in [STATE_LOW, 2**32)
MAX_CHUNK = 4096  # steps per stream: what bounds a decoder's Python-level work
LANE_BYTES = 6  # a lane's u32 state and u16 word count
MAX_CLASSES = 64  # context classes of one model: bounds a decoder's tables to 64 x 2**14 entries


@dataclass(frozen=True)
class Model:
    """Per-class frequency tables over an alphabet, and the class of each symbol as a context.

    `boundaries` are the first symbols of classes 1.., strictly increasing in [1, alphabet); `freqs` has
    one row per class, each summing to TOTAL."""

    boundaries: np.ndarray  # int64 (G - 1,)
    freqs: np.ndarray  # int64 (G, A)

    @property
    def classes(self) -> int:
        return self.freqs.shape[0]

    @property
    def alphabet(self) -> int:
        return self.freqs.shape[1]

    def class_of(self) -> np.ndarray:
        """The context class of every symbol of the alphabet."""
        return np.searchsorted(self.boundaries, np.arange(self.alphabet), side="right").astype(np.int64)

    def to_bytes(self) -> bytes:
        return self.boundaries.astype("<u2").tobytes() + varints(self.freqs.reshape(-1))

    @staticmethod
    def size_bounds(classes: int, alphabet: int) -> tuple[int, int]:
        """The fewest and most bytes a model of this shape takes (a frequency is 1 to 3 bytes)."""
        return 2 * (classes - 1) + classes * alphabet, 2 * (classes - 1) + 3 * classes * alphabet

    @classmethod
    def from_bytes(cls, data: "bytes | memoryview", classes: int, alphabet: int, what: str) -> "Model":
        """A model read from a file, validated: what a decoder must check before trusting it."""
        if not 1 <= classes <= MAX_CLASSES:
            raise DczError(f"{what}: {classes} classes, outside [1, {MAX_CLASSES}]")
        low, high = cls.size_bounds(classes, alphabet)
        if not low <= len(data) <= high:
            raise DczError(f"{what}: {len(data)} bytes cannot hold a model of {classes} classes over {alphabet} symbols")
        boundaries = np.frombuffer(data, dtype="<u2", count=classes - 1).astype(np.int64)
        freqs = read_varints(np.frombuffer(data, dtype=np.uint8, offset=2 * (classes - 1)), classes * alphabet, what)
        freqs = freqs.reshape(classes, alphabet)
        if boundaries.size and (boundaries[0] < 1 or boundaries[-1] >= alphabet or (np.diff(boundaries) <= 0).any()):
            raise DczError(f"{what}: class boundaries must be strictly increasing within [1, {alphabet})")
        if (freqs.sum(axis=1) != TOTAL).any():
            raise DczError(f"{what}: the frequencies of every class must sum to {TOTAL}")
        return cls(boundaries, freqs)


def varints(values: np.ndarray) -> bytes:
    """Unsigned LEB128 of values below 2**21: 7 bits a byte, least significant first, high bit = more follows.

    >>> varints(np.array([0, 127, 128, 16384])).hex()
    '007f8001808001'
    """
    values = np.asarray(values, dtype=np.int64)
    length = 1 + (values >= 1 << 7) + (values >= 1 << 14)
    out = np.zeros((values.size, 3), dtype=np.uint8)
    for k in range(3):
        more = length > k + 1
        out[:, k] = ((values >> (7 * k)) & 0x7F) | (more << 7)
    return out[np.arange(3) < length[:, None]].tobytes()


def read_varints(data: np.ndarray, count: int, what: str) -> np.ndarray:
    """Exactly `count` values from `data` (`varints`' form, 1 to 3 bytes each, no superfluous zero byte), or
    a DczError."""
    ends = np.flatnonzero(data < 0x80)
    if ends.size != count or (count and ends[-1] != data.size - 1) or (not count and data.size):
        raise DczError(f"{what}: the table does not hold exactly {count} frequencies")
    starts = np.concatenate(([0], ends[:-1] + 1))
    length = ends - starts + 1
    if (length > 3).any() or ((length > 1) & (data[ends] == 0)).any():
        raise DczError(f"{what}: a frequency is not a 1- to 3-byte varint in its shortest form")
    values = np.zeros(count, dtype=np.int64)
    for k in range(3):
        has = length > k
        values[has] |= (data[starts[has] + k].astype(np.int64) & 0x7F) << (7 * k)
    return values


def quantize_counts(counts: np.ndarray) -> np.ndarray:
    """Integer frequencies summing to TOTAL, every counted symbol at least 1, close to counts' proportions
    (a row of no counts puts all its mass on symbol 0).

    >>> quantize_counts(np.array([3, 1, 0, 0])).tolist()
    [12288, 4096, 0, 0]
    """
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    freqs = np.zeros(counts.size, dtype=np.int64)
    if total == 0:
        freqs[0] = TOTAL
        return freqs
    used = counts > 0
    if int(used.sum()) > TOTAL:
        raise ValueError(f"{int(used.sum())} symbols cannot share {TOTAL} frequencies")
    exact = counts * (TOTAL / total)
    freqs[used] = np.maximum(1, np.floor(exact[used]).astype(np.int64))
    short = TOTAL - int(freqs.sum())
    if short > 0:  # the largest remainders gain one each (short < number of used symbols)
        order = np.argsort(-(exact - freqs) * used, kind="stable")
        freqs[order[:short]] += 1
    while short < 0:  # the floors of 1 overshot: take from the symbols that lose least per unit
        give = np.flatnonzero(freqs > 1)
        cost = counts[give] / freqs[give]  # marginal bits ~ count / freq
        take = give[np.argsort(cost, kind="stable")[:-short]]
        freqs[take] -= 1
        short += take.size
    return freqs


def transitions(symbols: np.ndarray, alphabet: int, chunk: int) -> np.ndarray:
    """Counts of (previous symbol, symbol) within lanes, an alphabet x alphabet matrix; a lane's first symbol
    counts as following symbol 0 (whose class is 0, the class a lane starts in). Whole lanes at a time (about
    2**20 symbols), so any symbol dtype costs no int64 copy of the stream."""
    symbols = np.asarray(symbols)
    joint = np.zeros(alphabet * alphabet, dtype=np.int64)
    piece = max(1, (1 << 20) // chunk) * chunk
    for start in range(0, symbols.size, piece):
        part = symbols[start : start + piece].astype(np.int64)
        pair = np.empty_like(part)
        pair[1:] = part[:-1]
        pair[::chunk] = 0  # a piece starts a lane
        pair *= alphabet
        pair += part
        joint += np.bincount(pair, minlength=alphabet * alphabet)
    return joint.reshape(alphabet, alphabet)


def _grouped(joint: np.ndarray, boundaries: np.ndarray) -> np.ndarray:
    """The transition counts of each class: the rows of its symbols summed (classes are contiguous)."""
    return np.add.reduceat(joint, np.concatenate(([0], boundaries)).astype(np.intp), axis=0)


def fit(joint: np.ndarray, boundaries: "np.ndarray | list[int]") -> tuple[Model, float]:
    """The model for classes `boundaries` from a stream's transition counts, and the bits it codes the stream
    in (without the model's own bytes)."""
    boundaries = np.asarray(boundaries, dtype=np.int64)
    groups = _grouped(joint, boundaries)
    freqs = np.stack([quantize_counts(row) for row in groups])
    used = groups > 0
    bits = float((groups[used] * (PRECISION - np.log2(freqs[used]))).sum())
    return Model(boundaries, freqs), bits


def choose(joint: np.ndarray, candidates: "list[list[int]]", n: int, chunk: int) -> tuple[Model, int]:
    """Of candidate class boundaries, the model giving the fewest bytes (stream estimate plus model); returns
    it and that estimate."""
    best: tuple[Model, int] | None = None
    seen: set[tuple[int, ...]] = set()
    for boundaries in candidates:
        key = tuple(int(b) for b in boundaries)
        if key in seen or len(key) >= MAX_CLASSES:
            continue
        seen.add(key)
        model, bits = fit(joint, key)
        size = estimated_bytes(bits, n, chunk) + len(model.to_bytes())
        if best is None or size < best[1]:
            best = (model, size)
    assert best is not None
    return best


def estimated_bytes(bits: float, n: int, chunk: int) -> int:
    """A coded stream's size from its information content: lane states plus whole 16-bit words."""
    return LANE_BYTES * lanes(n, chunk) + 2 * int(np.ceil(bits / 16))


def mass_boundaries(counts: np.ndarray, start: int, stop: int, parts: int) -> list[int]:
    """Up to `parts` - 1 boundaries inside symbols [start, stop) splitting their counts into parts of about
    equal mass (the start of the range excluded).

    >>> mass_boundaries(np.array([1, 1, 1, 1, 1, 1, 1, 1]), 0, 8, 4)
    [2, 4, 6]
    """
    if parts <= 1 or stop - start < 2:
        return []
    segment = np.asarray(counts[start:stop], dtype=np.float64)
    if parts >= stop - start:
        return list(range(start + 1, stop))
    total = segment.sum()
    if total == 0:
        return []
    cuts = np.searchsorted(np.cumsum(segment), total * np.arange(1, parts) / parts, side="left") + 1 + start
    return sorted({int(c) for c in cuts if start < c < stop})


def lanes(n: int, chunk: int) -> int:
    return -(-n // chunk) if n else 0


def stream_length(n: int, chunk: int, words: int) -> int:
    """The bytes of a coded stream of n symbols holding `words` 16-bit words."""
    return LANE_BYTES * lanes(n, chunk) + 2 * words


def words_of(stream: bytes, n: int, chunk: int) -> int:
    """How many 16-bit words a coded stream of n symbols holds."""
    return (len(stream) - LANE_BYTES * lanes(n, chunk)) // 2


def encode(symbols: np.ndarray, model: Model, chunk: int) -> bytes:
    """The coded stream of `symbols` (each in [0, alphabet), with nonzero frequency in its context)."""
    return encode_streams([(symbols, model, chunk)])[0]


#: symbols coded in one vectorised pass: the pass holds 7 bytes a symbol (frequency and cumulative
#: frequency as uint16, each step's low word, whether it was emitted), so a larger stream is coded in pieces
#: of whole lanes, whose bytes join into the same stream (a lane starts from its own state and context:
#: lanes are independent)
GROUP_SYMBOLS = 1 << 23
#: lanes whose frequencies are looked up at once (bounds the lookup's int64 temporaries)
_LOOKUP_SYMBOLS = 1 << 20


def encode_streams(streams: "list[tuple[np.ndarray, Model, int]]") -> list[bytes]:
    """Several streams (symbols, model, chunk) coded side by side, all their lanes in the same steps; at
    most `GROUP_SYMBOLS` symbols at a time (~60 MB), whatever the streams' length."""
    if sum(int(symbols.size) for symbols, _, _ in streams) <= GROUP_SYMBOLS:
        return _encode_group(streams)
    out = []
    for symbols, model, chunk in streams:
        per = max(1, GROUP_SYMBOLS // chunk) * chunk  # whole lanes a piece
        parts = [_encode_group([(symbols[start : start + per], model, chunk)])[0] for start in range(0, max(int(symbols.size), 1), per)]
        heads = [lanes(min(per, int(symbols.size) - i * per), chunk) for i in range(len(parts))]
        states = b"".join(part[: 4 * n] for part, n in zip(parts, heads, strict=True))
        counts = b"".join(part[4 * n : 6 * n] for part, n in zip(parts, heads, strict=True))
        words = b"".join(part[6 * n :] for part, n in zip(parts, heads, strict=True))
        out.append(states + counts + words)
    return out


def _encode_group(streams: "list[tuple[np.ndarray, Model, int]]") -> list[bytes]:
    """One pass over every lane of `streams`. Lanes sit in columns by length, longest first (a stream's
    whole lanes in a block, its short last lane apart), so the lanes still coding at a step are a prefix.
    States are uint32: the update (x // f) * 2**14 + x % f + cum stays below 2**32 while x < f * 2**18,
    which renormalisation keeps."""
    blocks = []  # (stream, first symbol, lanes, length): whole lanes in a block, a short last lane alone
    for number, (symbols, _, chunk) in enumerate(streams):
        n = int(symbols.size)
        if n >= chunk:
            blocks.append((number, 0, n // chunk, chunk))
        if n % chunk:
            blocks.append((number, n - n % chunk, 1, n % chunk))
    blocks.sort(key=lambda block: -block[3])  # stable
    total = sum(block[2] for block in blocks)
    steps = blocks[0][3] if blocks else 0
    f = np.empty((steps, total), dtype=np.uint16)  # steps x lanes: a step reads contiguous rows
    c = np.empty((steps, total), dtype=np.uint16)
    active = np.zeros(steps, dtype=np.int64)  # lanes longer than step t
    column = 0
    for number, first, width, length in blocks:
        symbols, model, _ = streams[number]
        _lookup(
            symbols[first : first + width * length].reshape(width, length),
            model,
            f[:length, column : column + width],
            c[:length, column : column + width],
        )
        column += width
        active[:length] = column
    x = np.full(total, STATE_LOW, dtype=np.uint32)
    low = np.empty((steps, total), dtype=np.uint16)  # each lane's low word before each step
    emitted = np.zeros((steps, total), dtype=bool)  # whether it emitted that word there
    high = np.empty(total, dtype=np.uint32)
    gain = np.empty(total, dtype=np.uint16)
    for t in range(steps - 1, -1, -1):
        a = int(active[t])
        xs, fs, scratch = x[:a], f[t, :a], high[:a]
        np.right_shift(xs, 32 - PRECISION, out=scratch)
        emit = np.greater_equal(scratch, fs, out=emitted[t, :a])  # x >= f << 18: emit the low 16 bits
        np.copyto(low[t, :a], xs, casting="unsafe")  # the low 16 bits
        np.right_shift(xs, emit.view(np.uint8) << 4, out=xs)
        np.subtract(TOTAL, fs, out=gain[:a])
        np.floor_divide(xs, fs, out=scratch)
        scratch *= gain[:a]
        xs += scratch  # = (x // f) << 14 + x % f
        xs += c[t, :a]
    out = []
    for number, (symbols, _, chunk) in enumerate(streams):
        mine = [(start, block) for start, block in zip(np.cumsum([0] + [b[2] for b in blocks]).tolist(), blocks) if block[0] == number]
        mine.sort(key=lambda item: item[1][1])  # in lane order
        states, counts, words = [], [], []
        for start, (_, _, width, length) in mine:
            sent = emitted[:length, start : start + width]
            states.append(x[start : start + width])
            counts.append(sent.sum(axis=0))
            words.append(low[:length, start : start + width].T[sent.T])  # lane by lane, as its decoder reads them
        if not mine:
            out.append(b"")
            continue
        out.append(
            np.concatenate(states).astype("<u4").tobytes()
            + np.concatenate(counts).astype("<u2").tobytes()
            + np.concatenate(words).astype("<u2").tobytes()
        )
    return out


def _lookup(grid: np.ndarray, model: Model, f: np.ndarray, c: np.ndarray) -> None:
    """Each symbol's frequency and cumulative frequency in its context into `f` and `c` (steps x lanes) for
    lanes `grid` (lanes x steps), some lanes at a time."""
    classes = model.class_of()
    freqs = model.freqs.reshape(-1)
    cum = (np.cumsum(model.freqs, axis=1) - model.freqs).reshape(-1)
    width, length = grid.shape
    per = max(1, _LOOKUP_SYMBOLS // max(length, 1))
    for lane in range(0, width, per):
        part = grid[lane : lane + per]
        index = np.zeros(part.shape, dtype=np.int64)
        index[:, 1:] = classes[part[:, :-1]]
        index *= model.alphabet
        index += part
        frequency = freqs[index]
        if not frequency.all():
            raise ValueError("a symbol has no frequency in its context")
        f[:, lane : lane + per] = frequency.T
        c[:, lane : lane + per] = cum[index].T


def decode(data: "bytes | memoryview", n: int, model: Model, chunk: int, what: str) -> np.ndarray:
    """Exactly `n` symbols (int16) from a coded stream, or a DczError naming `what`."""
    return decode_streams([(data, n, model, chunk, what)])[0]


def decode_streams(streams: "list[tuple[bytes | memoryview, int, Model, int, str]]") -> list[np.ndarray]:
    """Several coded streams (data, n, model, chunk, what) decoded side by side, their lanes advancing in the
    same steps: the Python-level work is that of the longest lane, however many streams. Each lane reads its
    own words, so a step is the same few numpy operations for any number of lanes. Allocates 6 bytes per
    symbol at most plus the models' tables (at most MAX_CLASSES x TOTAL entries each), whatever the data hold."""
    states, counts, words, lengths, bases, owners, tables = [], [], [], [], [], [], []
    offset = 0
    for number, (data, n, model, chunk, what) in enumerate(streams):
        width = lanes(n, chunk)
        if n == 0 and len(data):
            raise DczError(f"{what}: {len(data)} bytes present for an empty stream")
        if len(data) < 6 * width or len(data) % 2:
            raise DczError(f"{what}: {len(data)} bytes cannot hold {width} lane states, word counts and 16-bit words")
        x = np.frombuffer(data, dtype="<u4", count=width).astype(np.int64)
        if (x < STATE_LOW).any():
            raise DczError(f"{what}: a lane starts in a state below {STATE_LOW}")
        count = np.frombuffer(data, dtype="<u2", count=width, offset=4 * width).astype(np.int64)
        if int(count.sum()) != (len(data) - 6 * width) // 2:
            raise DczError(f"{what}: the lanes' word counts do not add up to the words the stream holds")
        states.append(x)
        counts.append(count)
        words.append(np.frombuffer(data, dtype="<u2", offset=6 * width))
        lengths.append(np.minimum(chunk, n - chunk * np.arange(width)))
        bases.append(np.full(width, offset))
        owners.append(np.full(width, number))
        flat = model.freqs.reshape(-1)
        # per table index (offset + class << PRECISION | slot): the symbol, its frequency, slot - its
        # cumulative frequency, and the next symbol's table base (offset + its class << PRECISION)
        symbol_of = np.repeat(np.tile(np.arange(model.alphabet, dtype=np.int16), model.classes), flat)
        cum = (np.cumsum(model.freqs, axis=1) - model.freqs).reshape(-1).astype(np.int32)
        delta_of = np.tile(np.arange(TOTAL, dtype=np.int32), model.classes) - np.repeat(cum, flat)
        next_base = (offset + (model.class_of() << PRECISION)).astype(np.int32)[symbol_of]
        tables.append((symbol_of, np.repeat(flat.astype(np.int32), flat), delta_of, next_base))
        offset += model.classes * TOTAL
    if not streams:
        return []
    symbol_of, freq_of, delta_of, next_base = (np.concatenate([t[k] for t in tables]) for k in range(4))
    count = np.concatenate(counts)
    end = np.cumsum(count)  # one past each lane's last word, in all the streams' words end to end
    pointer = end - count
    all_words = np.concatenate(words)
    length = np.concatenate(lengths)
    order = np.argsort(-length, kind="stable")  # lanes by length, longest first: the active ones a prefix
    length, x, pointer, i = length[order], np.concatenate(states)[order], pointer[order], np.concatenate(bases)[order]
    steps = int(length[0]) if length.size else 0
    active = np.searchsorted(-length, -np.arange(steps), side="left")  # lanes longer than step t
    record = np.zeros((steps, length.size), dtype=np.int16)  # each step's symbols (alphabets < 2**15)
    work = np.empty(length.size, dtype=np.int64)
    table = np.empty(length.size, dtype=np.int64)
    for t, a in enumerate(active.tolist()):
        xs, index, scratch = x[:a], table[:a], work[:a]
        np.bitwise_and(xs, TOTAL - 1, out=index)
        index |= i[:a]  # this step's table index: the lane's class base | its slot
        np.right_shift(xs, PRECISION, out=scratch)
        scratch *= freq_of[index]
        np.add(scratch, delta_of[index], out=xs)
        record[t, :a] = symbol_of[index]
        need = np.flatnonzero(xs < STATE_LOW)
        if need.size:  # a lane past its own words reads a neighbour's (clipped at the end): caught below
            at = pointer[need]
            xs[need] = (xs[need] << 16) | all_words.take(at, mode="clip")
            pointer[need] = at + 1
        i = next_base[index]
    bad = np.flatnonzero((x != STATE_LOW) | (pointer != end[order]))
    if bad.size:
        what = streams[int(np.concatenate(owners)[order][bad[0]])][4]
        raise DczError(f"{what}: corrupt rANS stream (the lanes do not end where the encoder began)")
    out, first = [], 0
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)  # where each lane went in the sort
    for data, n, model, chunk, what in streams:
        width = lanes(n, chunk)
        columns = rank[first : first + width]
        first += width
        out.append(record[: min(chunk, n), columns].T.reshape(-1)[:n])  # past a short last lane's end: cut
    return out
