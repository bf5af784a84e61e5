"""Autoencoders (chapter 13): an encoder squeezes the input into a short code, a decoder
rebuilds the input from it, and training minimises the reconstruction error ‖x − D(E(x))‖².
A denoising autoencoder is the same network trained on corrupted inputs with clean targets
(see `dlcourse.recipes.train_denoising`)."""
from dlcourse import nn
from dlcourse.nn.module import check_float_input

__all__ = ["Autoencoder", "ConvAutoencoder"]


class _EncoderDecoder(nn.Module):
    """forward = decode(encode(x)); backward runs the decoder, then the encoder, in reverse."""

    def encode(self, x):
        return self.encoder(x)

    def decode(self, code):
        return self.decoder(code)

    def forward(self, x):
        x = self._check(x)
        self._cache = x.shape
        return self.decode(self.encode(x))

    def backward(self, grad_output):
        self._saved(self._cache)
        return self.encoder.backward(self.decoder.backward(grad_output))


class Autoencoder(_EncoderDecoder):
    r"""Dense autoencoder with a Sigmoid output (inputs scaled to [0, 1]).

        encoder: in_features → hidden[0] → … → code_size   (Linear + ReLU, last Linear alone)
        decoder: code_size → … → hidden[0] → in_features   (Linear + ReLU, then Sigmoid)

    `encoder` and `decoder` are `Sequential`s, so the `state_dict` keys are
    `encoder.0.weight`, …, `decoder.0.weight`, … as in the same torch model.

    Shape:
        input: (N, in_features);  code: (N, code_size);  output: (N, in_features)
    """

    def __init__(self, in_features: int = 64, code_size: int = 8, hidden=(32,)):
        super().__init__()
        self.in_features = int(in_features)
        sizes = [self.in_features, *hidden, int(code_size)]
        self.encoder = nn.Sequential(*_dense_stack(sizes))
        self.decoder = nn.Sequential(*_dense_stack(sizes[::-1]), nn.Sigmoid())
        self._cache = None

    def _check(self, x):
        x = check_float_input(self, x)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"Autoencoder expects input of shape (N, {self.in_features}), "
                             f"got shape {tuple(x.shape)}")
        return x


def _dense_stack(sizes):
    layers = []
    for index in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[index], sizes[index + 1]))
        if index < len(sizes) - 2:
            layers.append(nn.ReLU())
    return layers


class ConvAutoencoder(_EncoderDecoder):
    r"""Convolutional autoencoder for small images (1×8×8 digits by default).

        encoder: Conv2d(C→h, 3×3) ReLU MaxPool2d(2) Conv2d(h→k, 3×3)
                 (N, C, H, W) → code (N, k, H/2, W/2)
        decoder: Conv2d(k→h, 3×3) ReLU Upsample(×2) Conv2d(h→C, 3×3) Sigmoid
                 code → (N, C, H, W)

    with h = hidden_channels, k = code_channels, and padding 1 so convolutions keep the size
    (H and W must be even). For the digits the code is k × 4 × 4: 16 numbers instead of 64
    pixels with k = 1. Nearest-neighbour upsampling followed by a convolution is the
    decoder's way back up, instead of a transposed convolution (which tends to leave
    checkerboard artefacts).

    Shape:
        input: (N, in_channels, H, W);  code: (N, code_channels, H/2, W/2);  output: like input
    """

    def __init__(self, in_channels: int = 1, code_channels: int = 1, hidden_channels: int = 16):
        super().__init__()
        self.in_channels = int(in_channels)
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, hidden_channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(hidden_channels, code_channels, 3, padding=1))
        self.decoder = nn.Sequential(
            nn.Conv2d(code_channels, hidden_channels, 3, padding=1), nn.ReLU(), nn.Upsample(scale_factor=2),
            nn.Conv2d(hidden_channels, in_channels, 3, padding=1), nn.Sigmoid())
        self._cache = None

    def _check(self, x):
        x = check_float_input(self, x)
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[2] % 2 or x.shape[3] % 2:
            raise ValueError(f"ConvAutoencoder expects input of shape (N, {self.in_channels}, H, W) "
                             f"with H and W even, got shape {tuple(x.shape)}")
        return x
