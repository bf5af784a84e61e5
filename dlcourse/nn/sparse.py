"""Lookup tables: `Embedding`."""
import numpy as np

from dlcourse._random import default_dtype
from dlcourse.nn import init
from dlcourse.nn.module import Module

__all__ = ["Embedding"]


class Embedding(Module):
    r"""A table of num_embeddings vectors; y[..., :] = weight[indices[...], :].

    The backward of a lookup is a scatter-add: every occurrence of index k adds its
    upstream gradient row to grad weight[k]. The row `padding_idx` (if given) is
    initialised to zero and never receives a gradient, as in torch.

    Shape:
        input: integer array of any shape (*)
        output: (*, embedding_dim)
        weight: (num_embeddings, embedding_dim), initialised N(0, 1)

    `backward(grad_output)` returns None: indices have no gradient.
    sparse=True is accepted for torch compatibility, but the weight gradient stays a dense
    (num_embeddings, embedding_dim) array with the values torch's sparse gradient holds
    (rows never looked up are zero). max_norm and scale_grad_by_freq are not supported.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx=None, max_norm=None,
                 norm_type: float = 2.0, scale_grad_by_freq: bool = False, sparse: bool = False,
                 _weight=None, _freeze: bool = False, device=None, dtype=None):
        super().__init__()
        for name, value in (("max_norm", max_norm), ("scale_grad_by_freq", scale_grad_by_freq or None)):
            if value is not None:
                raise ValueError(f"Embedding: {name}={value!r} is not supported by dlcourse "
                                 "(leave it at its default)")
        self.num_embeddings = int(num_embeddings)
        self.embedding_dim = int(embedding_dim)
        if padding_idx is not None:
            if not -self.num_embeddings <= padding_idx < self.num_embeddings:
                raise ValueError(f"Embedding: padding_idx must be within num_embeddings "
                                 f"[{-self.num_embeddings}, {self.num_embeddings}), got {padding_idx}")
            padding_idx = int(padding_idx) % self.num_embeddings  # torch stores it non-negative
        self.padding_idx = padding_idx
        self.max_norm = max_norm
        self.norm_type = norm_type
        self.scale_grad_by_freq = scale_grad_by_freq
        self.sparse = sparse
        self._freeze = bool(_freeze)  # torch's requires_grad=False: backward adds no gradient
        if _weight is None:
            dtype = np.dtype(dtype) if dtype is not None else default_dtype()
            self.register_parameter("weight", np.empty((self.num_embeddings, self.embedding_dim), dtype))
            self.reset_parameters()
        else:
            weight = np.array(_weight, dtype=dtype, copy=True)
            if weight.shape != (self.num_embeddings, self.embedding_dim):
                raise ValueError(f"Embedding: _weight must have shape "
                                 f"{(self.num_embeddings, self.embedding_dim)}, got {weight.shape}")
            self.register_parameter("weight", weight)
        self._cache = None

    @classmethod
    def from_pretrained(cls, embeddings, freeze: bool = True, padding_idx=None, max_norm=None,
                        norm_type: float = 2.0, scale_grad_by_freq: bool = False, sparse: bool = False):
        """An Embedding whose weight is a copy of `embeddings` (num_embeddings, embedding_dim)."""
        embeddings = np.asarray(embeddings)
        if embeddings.ndim != 2:
            raise ValueError(f"Embeddings parameter is expected to be 2-dimensional, "
                             f"got shape {embeddings.shape}")
        return cls(*embeddings.shape, padding_idx=padding_idx, max_norm=max_norm, norm_type=norm_type,
                   scale_grad_by_freq=scale_grad_by_freq, sparse=sparse, _weight=embeddings,
                   _freeze=freeze)

    def reset_parameters(self) -> None:
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight[self.padding_idx] = 0

    def forward(self, input):
        if hasattr(input, "detach") and hasattr(input, "numpy"):
            raise TypeError("Embedding got a torch tensor as input; dlcourse works on NumPy arrays: "
                            "pass tensor.detach().cpu().numpy()")
        indices = np.asarray(input)
        if not np.issubdtype(indices.dtype, np.integer):
            raise TypeError(f"Embedding expects integer indices (int64 or int32), got dtype "
                            f"{indices.dtype}; convert with indices.astype(np.int64)")
        if indices.size and (indices.min() < 0 or indices.max() >= self.num_embeddings):
            raise ValueError(f"Embedding index out of range: expected 0 <= index < "
                             f"{self.num_embeddings}, got indices in [{indices.min()}, {indices.max()}]")
        self._cache = indices
        return self.weight[indices]

    def backward(self, grad_output):
        indices = self._saved(self._cache)
        grad_output = np.asarray(grad_output)
        expected = indices.shape + (self.embedding_dim,)
        if grad_output.shape != expected:
            raise ValueError(f"Embedding.backward expects grad_output of shape {expected}, "
                             f"got shape {grad_output.shape}")
        if self._freeze:
            return None
        indices = indices.reshape(-1)
        rows = grad_output.reshape(-1, self.embedding_dim)
        if self.padding_idx is not None:
            keep = indices != self.padding_idx
            indices, rows = indices[keep], rows[keep]
        # np.add.at, unlike `grad[indices] += rows`, adds every repeated index.
        np.add.at(self.grads["weight"], indices, rows)
        return None

    def extra_repr(self):
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        if self.max_norm is not None:
            s += f", max_norm={self.max_norm}"
        if self.norm_type != 2:
            s += f", norm_type={self.norm_type}"
        if self.scale_grad_by_freq is not False:
            s += f", scale_grad_by_freq={self.scale_grad_by_freq}"
        if self.sparse is not False:
            s += ", sparse=True"
        return s
