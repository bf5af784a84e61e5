"""Sequence data that works offline: generated tasks and the shipped text corpus.

- `digit_sequences`: sequences of 8×8 digit images labelled with the digit that appears most
  (the CNN-LSTM's task, chapter 11).
- `palindrome_task`: token sequences labelled by whether they are palindromes (the
  Transformer's task, chapter 12).
- `load_corpus`, `split_text`, `text_windows`, `unigram_cross_entropy`: the English text that
  ships with the package, for the character language model (chapter 11).

Every generator is seeded, so the same arguments always give the same arrays.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["digit_sequences", "palindrome_task",
           "load_corpus", "split_text", "text_windows", "unigram_cross_entropy", "CORPUS_PATH"]

CORPUS_PATH = Path(__file__).parent / "corpus" / "corpus.txt"


# ---------------------------------------------------------------------- digits over time
def digit_sequences(n: int, length: int = 5, repeats: int = 3, split: str = "train",
                    seed: int = 0, dtype=np.float32):
    """`n` sequences of `length` digit images; the label is the digit shown `repeats` times.

    Each sequence shows its label digit in `repeats` random frames and a different digit
    in each other frame (the others are distinct from each other and from the label), so
    the majority is unambiguous and no single frame gives the answer: a model must
    recognise every frame and count. Images come from the `split` ('train' or 'test') of
    `dlcourse.data.load_digits`, so test sequences only contain unseen images.

    Returns x: (n, length, 1, 8, 8) in [0, 1], y: (n,) int64 labels 0–9.
    Chance is 10%; reading one frame is right repeats/length of the time.
    """
    from dlcourse.data import load_digits

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not 1 <= repeats <= length or length - repeats > 9 or (repeats < 2 and length > 1):
        raise ValueError(f"need 2 <= repeats <= length (the label is then the only digit shown more "
                         f"than once) and at most 9 other frames, got length={length}, repeats={repeats}")
    train, test = load_digits(flatten=False, dtype=dtype)
    images, labels = train if split == "train" else test
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    # The other digits: the first (length − repeats) of a random order of the ten digits in
    # which the label's sort key is pushed past 1, so it always comes last and is never taken.
    others = np.argsort(rng.random((n, 10)) + 2.0 * (np.arange(10) == y[:, None]), axis=1)
    others = others[:, : length - repeats]
    digits = np.concatenate([np.repeat(y[:, None], repeats, axis=1), others], axis=1)
    digits = np.take_along_axis(digits, np.argsort(rng.random((n, length)), axis=1), axis=1)
    # For each frame, a random image of its digit.
    by_digit = [np.flatnonzero(labels == d) for d in range(10)]
    counts = np.array([len(index) for index in by_digit])
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pool = np.concatenate(by_digit)
    pick = pool[offsets[digits] + (rng.random(digits.shape) * counts[digits]).astype(np.int64)]
    return images[pick], y.astype(np.int64)


# ---------------------------------------------------------------------- palindromes
def palindrome_task(n: int, length: int = 12, vocab_size: int = 6, seed: int = 0):
    """`n` token sequences labelled 1 when they read the same backwards, else 0.

    Half the rows (in expectation) are palindromes: a random first half and its mirror
    image. The others are palindromes with ONE token changed to a different one, so exactly
    one mirrored pair disagrees and no single position gives the answer away. Deciding
    means comparing the token at position i with the one at L − 1 − i: a model that sums
    per-position features and then applies a linear layer cannot do it, self-attention can
    (chapter 12).

    Returns x: (n, length) int64 tokens in [0, vocab_size), y: (n,) int64 labels.
    """
    if length < 2 or length % 2 or vocab_size < 2:
        raise ValueError(f"palindrome_task needs an even length >= 2 and vocab_size >= 2, "
                         f"got length={length}, vocab_size={vocab_size}")
    rng = np.random.default_rng(seed)
    half = rng.integers(0, vocab_size, (n, length // 2))
    x = np.concatenate([half, half[:, ::-1]], axis=1)
    y = rng.integers(0, 2, n)
    rows = np.flatnonzero(y == 0)
    position = rng.integers(0, length, len(rows))
    # Adding 1 … vocab_size − 1 modulo vocab_size always gives a different token.
    x[rows, position] = (x[rows, position] + rng.integers(1, vocab_size, len(rows))) % vocab_size
    return x.astype(np.int64), y.astype(np.int64)


# ---------------------------------------------------------------------- text
def load_corpus() -> str:
    """The course's English text about the history and ideas of neural networks (~32 KB)."""
    return CORPUS_PATH.read_text(encoding="utf-8")


def split_text(text: str, validation_fraction: float = 0.1):
    """(train, validation): the last `validation_fraction` of the text is held out whole,
    so validation measures prediction of unseen passages, not of shuffled windows."""
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    cut = int(round(len(text) * (1 - validation_fraction)))
    return text[:cut], text[cut:]


def text_windows(indices, seq_len: int, stride: int | None = None):
    """Input/target windows for next-character prediction.

    indices: (L,) ints. Returns x, y: (M, seq_len) with y[:, t] = x[:, t + 1] (the next
    character); windows start every `stride` characters (default seq_len, no overlap).
    """
    indices = np.asarray(indices)
    if indices.ndim != 1 or len(indices) < seq_len + 1:
        raise ValueError(f"text_windows needs a 1-D array of at least seq_len + 1 = {seq_len + 1} "
                         f"indices, got shape {indices.shape}")
    stride = seq_len if stride is None else stride
    starts = np.arange(0, len(indices) - seq_len, stride)
    window = starts[:, None] + np.arange(seq_len + 1)
    chunks = indices[window]
    return chunks[:, :-1].astype(np.int64), chunks[:, 1:].astype(np.int64)


def unigram_cross_entropy(train_indices, eval_indices, vocab_size: int) -> float:
    """The baseline a language model must beat: the cross-entropy (nats per character) on
    `eval_indices` of the character frequencies counted on `train_indices`,

        H = −(1/M) Σ_m log q(c_m),   q(c) = (count_train(c) + 1) / (L + V)

    (add-one smoothing keeps a character unseen in training from giving an infinite loss).
    """
    counts = np.bincount(np.asarray(train_indices), minlength=vocab_size).astype(np.float64)
    q = (counts + 1) / (counts.sum() + vocab_size)
    return float(-np.mean(np.log(q[np.asarray(eval_indices)])))
