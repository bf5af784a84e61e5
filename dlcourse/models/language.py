"""A character-level LSTM language model (chapter 11): characters in, a distribution over
the next character out, and sampling text from it.

    vocabulary = CharVocabulary(text)
    model = LSTMLanguageModel(len(vocabulary))
    logits = model(vocabulary.encode("neural")[None])        # (1, 6, V)
    print(model.sample("The ", 200, temperature=0.8, vocabulary=vocabulary))
"""
from __future__ import annotations

import numpy as np

from dlcourse import nn
from dlcourse._random import get_rng

__all__ = ["CharVocabulary", "LSTMLanguageModel"]


class CharVocabulary:
    """The sorted set of characters of a text, with `encode` (str → int64 indices) and
    `decode` (indices → str). `chars[i]` is the character of index i."""

    def __init__(self, text: str):
        if not isinstance(text, str) or not text:
            raise ValueError("CharVocabulary needs a non-empty string to collect characters from")
        self.chars = sorted(set(text))
        self.index = {char: i for i, char in enumerate(self.chars)}

    def __len__(self):
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        unknown = sorted(set(text) - set(self.index))
        if unknown:
            raise ValueError(f"CharVocabulary cannot encode characters it has not seen: {unknown!r}")
        return np.array([self.index[char] for char in text], dtype=np.int64)

    def decode(self, indices) -> str:
        indices = np.asarray(indices).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise ValueError(f"CharVocabulary.decode expects indices in [0, {len(self)}), "
                             f"got values from {indices.min()} to {indices.max()}")
        return "".join(self.chars[i] for i in indices)

    def __repr__(self):
        return f"CharVocabulary(size={len(self)})"


class LSTMLanguageModel(nn.Module):
    r"""Embedding → LSTM (batch_first) → Linear: logits of the next character at every step.

        e_t = E[x_t],   (h_t, c_t) = LSTM(e_t, (h_{t−1}, c_{t−1})),   z_t = W h_t + b
        p(x_{t+1} | x_≤t) = softmax(z_t)

    Sub-modules `embedding`, `lstm`, `dropout`, `fc`: the same `state_dict` as the torch
    model written with those names. `dropout` acts between LSTM layers (torch's LSTM
    argument, when num_layers > 1) and on the LSTM output before `fc`.

    forward(input, hx=None, return_state=False) returns the logits, or (logits, (h_n, c_n))
    with return_state (to continue a sequence, as `sample` does). backward(grad_logits)
    fills every parameter gradient and returns None: integer indices have no gradient.

    Shape:
        input: (N, T) int character indices in [0, vocab_size)
        output: (N, T, vocab_size) logits; h_n, c_n: (num_layers, N, hidden_size)
    """

    def __init__(self, vocab_size: int, embedding_dim: int = 32, hidden_size: int = 128,
                 num_layers: int = 1, dropout: float = 0.0):
        super().__init__()
        self.vocab_size = int(vocab_size)
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        # torch warns about inter-layer dropout on a one-layer LSTM, where it does nothing.
        self.lstm = nn.LSTM(embedding_dim, hidden_size, num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden_size, vocab_size)
        self._cache = None

    def forward(self, input, hx=None, return_state: bool = False):
        indices = np.asarray(input)
        if not np.issubdtype(indices.dtype, np.integer):
            raise TypeError(f"LSTMLanguageModel expects integer character indices, got dtype {indices.dtype}")
        if indices.ndim != 2:
            raise ValueError(f"LSTMLanguageModel expects input of shape (N, T), got shape {indices.shape}")
        output, state = self.lstm(self.embedding(indices), hx)
        self._cache = hx is not None
        logits = self.fc(self.dropout(output))
        return (logits, state) if return_state else logits

    def backward(self, grad_output):
        had_state = self._saved(self._cache)
        grad = self.lstm.backward(self.dropout.backward(self.fc.backward(grad_output)))
        # Given an initial state, the LSTM also returns its gradient; the model does not use it
        # (truncated backpropagation through time stops at the sequence boundary).
        self.embedding.backward(grad[0] if had_state else grad)
        return None

    def sample(self, start, length: int, temperature: float = 1.0, seed: int | None = None,
               vocabulary: CharVocabulary | None = None):
        """Continue `start` by `length` characters drawn one at a time from
        softmax(z / temperature), feeding each back in.

        start: text (needs `vocabulary`) or a sequence of indices. temperature < 1 sharpens
        the distribution, > 1 flattens it, 0 always takes the most likely character.
        seed: a private generator for this call (default: dlcourse's global generator).
        Returns start + continuation, as text when start was text, else as int64 indices.
        The model's train/eval mode is restored afterwards.
        """
        if isinstance(start, str):
            if vocabulary is None:
                raise ValueError("LSTMLanguageModel.sample: pass vocabulary= to sample from a text start")
            indices = vocabulary.encode(start)
        else:
            indices = np.asarray(start, dtype=np.int64).reshape(-1)
        if indices.size == 0:
            raise ValueError("LSTMLanguageModel.sample needs at least one start character")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        rng = np.random.default_rng(seed) if seed is not None else get_rng()
        was_training = self.training
        self.eval()
        generated = []
        try:
            logits, state = self.forward(indices[None], return_state=True)
            for _ in range(int(length)):
                z = logits[0, -1].astype(np.float64)
                if temperature == 0:
                    following = int(np.argmax(z))
                else:
                    z = z / temperature
                    p = np.exp(z - z.max())
                    following = int(rng.choice(self.vocab_size, p=p / p.sum()))
                generated.append(following)
                logits, state = self.forward(np.array([[following]]), state, return_state=True)
        finally:
            self.train(was_training)
        result = np.concatenate([indices, np.array(generated, dtype=np.int64)])
        return vocabulary.decode(result) if isinstance(start, str) else result
