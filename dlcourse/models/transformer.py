"""A small Transformer encoder that classifies token sequences (chapter 12)."""
import numpy as np

from dlcourse import nn

__all__ = ["TransformerClassifier"]


class TransformerClassifier(nn.Module):
    r"""Embedding + sinusoidal positions → TransformerEncoder (batch_first) → pooling → Linear.

        h⁰_t = E[x_t] + PE[t],   h^L = Encoder(h⁰),   logits = W pool(h^L) + b

    pooling='mean' averages h^L over the positions that are not padding,
    pool = Σ_t m_t h_t / Σ_t m_t with m_t = 0 at padding; pooling='first' takes h^L_0
    (the position of a classification token, as BERT does).

    Sub-modules `embedding`, `pos_encoder` (no parameters), `encoder`, `fc`: the same
    `state_dict` as a torch model written with those names and torch's
    `nn.TransformerEncoder(nn.TransformerEncoderLayer(..., batch_first=True), num_layers)`.

    forward(src, src_key_padding_mask=None): the mask is boolean, True at padding
    positions, which attention then ignores and mean pooling leaves out.
    backward(grad_logits) fills the parameter gradients and returns None (integer tokens
    have no gradient).

    Shape:
        src: (N, L) int tokens in [0, vocab_size), L ≤ max_len
        src_key_padding_mask: (N, L) bool, optional
        output: (N, num_classes) logits
    """

    def __init__(self, vocab_size: int, num_classes: int, d_model: int = 32, nhead: int = 4,
                 num_layers: int = 2, dim_feedforward: int = 64, max_len: int = 64,
                 dropout: float = 0.0, pooling: str = "mean"):
        super().__init__()
        if pooling not in ("mean", "first"):
            raise ValueError(f"TransformerClassifier: pooling must be 'mean' or 'first', got {pooling!r}")
        self.pooling = pooling
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.pos_encoder = nn.PositionalEncoding(d_model, max_len=max_len, dropout=dropout, batch_first=True)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers)
        self.fc = nn.Linear(d_model, num_classes)
        self._cache = None

    def forward(self, src, src_key_padding_mask=None):
        tokens = np.asarray(src)
        if not np.issubdtype(tokens.dtype, np.integer):
            raise TypeError(f"TransformerClassifier expects integer tokens, got dtype {tokens.dtype}")
        if tokens.ndim != 2:
            raise ValueError(f"TransformerClassifier expects src of shape (N, L), got shape {tokens.shape}")
        keep = np.ones(tokens.shape, bool)
        if src_key_padding_mask is not None:
            padding = np.asarray(src_key_padding_mask)
            if padding.dtype != np.bool_ or padding.shape != tokens.shape:
                raise ValueError(f"TransformerClassifier expects a boolean src_key_padding_mask of shape "
                                 f"{tokens.shape}, got {padding.dtype} of shape {padding.shape}")
            if padding.all(axis=1).any():
                raise ValueError("TransformerClassifier: a sequence is padding at every position")
            keep = ~padding
        hidden = self.encoder(self.pos_encoder(self.embedding(tokens)),
                              src_key_padding_mask=src_key_padding_mask)
        if self.pooling == "mean":
            weights = (keep / keep.sum(axis=1, keepdims=True)).astype(hidden.dtype)
        else:
            weights = np.zeros(tokens.shape, hidden.dtype)
            weights[:, 0] = 1
        self._cache = weights
        pooled = np.einsum("nl,nld->nd", weights, hidden)
        return self.fc(pooled)

    def backward(self, grad_output):
        weights = self._saved(self._cache)
        grad_pooled = self.fc.backward(grad_output)
        grad_hidden = weights[:, :, None] * grad_pooled[:, None, :]
        self.embedding.backward(self.pos_encoder.backward(self.encoder.backward(grad_hidden)))
        return None

    def extra_repr(self):
        return f"pooling={self.pooling!r}"
