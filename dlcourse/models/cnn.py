"""The documents' small convolutional network (chapter 9): two convolution + pooling stages
and a linear classifier."""
from dlcourse import nn
from dlcourse.nn.module import check_float_input

__all__ = ["CNN"]


class CNN(nn.Module):
    r"""conv1 (3×3, padding 1) → relu1 → pool1 (2×2) → conv2 (3×3, padding 1) → relu2
    → pool2 (2×2) → flatten → fc.

    Each pooling halves H and W, so `fc` has channels[1] · ⌊H/4⌋ · ⌊W/4⌋ inputs (64·2·2 = 256
    for 8×8 digits, 64·7·7 for 28×28 MNIST; the channels are those of PyTorch's MNIST example). Sub-module names are those of the documents'
    PyTorch code, so the `state_dict` loads into the same model written in torch.

    Shape:
        input: (N, in_channels, H, W) with (H, W) = image_size
        output: (N, num_classes) logits
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, channels=(32, 64), image_size=(8, 8)):
        super().__init__()
        self.in_channels = int(in_channels)
        self.image_size = tuple(image_size) if isinstance(image_size, (tuple, list)) else (image_size,) * 2
        self.conv1 = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(channels[0], channels[1], 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        height, width = self.image_size
        self.fc = nn.Linear(channels[1] * (height // 4) * (width // 4), num_classes)
        # The order in which forward visits the sub-modules; backward walks it in reverse.
        self._order = [name for name, _ in self.named_children()]
        self._cache = None

    def forward(self, x):
        x = check_float_input(self, x)
        if x.ndim != 4 or x.shape[1:] != (self.in_channels, *self.image_size):
            raise ValueError(f"CNN expects input of shape (N, {self.in_channels}, "
                             f"{', '.join(map(str, self.image_size))}), got shape {tuple(x.shape)}")
        self._cache = x.shape
        for name in self._order:
            x = getattr(self, name)(x)
        return x

    def backward(self, grad_output):
        self._saved(self._cache)
        for name in reversed(self._order):
            grad_output = getattr(self, name).backward(grad_output)
        return grad_output
