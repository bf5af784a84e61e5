"""The documents' CNN-LSTM (chapter 11): a convolutional front end reads each frame, an LSTM
reads the frames in order, and a linear head classifies the whole sequence — the shape of a
speech model that turns spectrogram frames into one decision."""
import numpy as np

from dlcourse import nn
from dlcourse.nn.module import check_float_input

__all__ = ["CNNLSTM"]


class CNNLSTM(nn.Module):
    r"""Per frame: Conv2d(3×3, padding 1) → ReLU → MaxPool2d(2) → Flatten; then an LSTM
    over time (batch_first) and a Linear layer on its last hidden state.

        f_t = flatten(maxpool(relu(conv(x_t))))    (the same weights for every t)
        h_1 … h_T = LSTM(f_1 … f_T),   logits = W h_T + b

    The front end runs once on all N·T frames by folding time into the batch, so it is one
    call, not a loop. Sub-modules `conv`, `relu`, `pool`, `flatten`, `lstm`, `fc`.

    Args:
        image_size: (H, W) of a frame, which fixes the LSTM's input size
            conv_channels · ⌊H/2⌋ · ⌊W/2⌋ (8×8 digits by default).

    Shape:
        input: (N, T, in_channels, H, W)
        output: (N, num_classes) logits
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, conv_channels: int = 16,
                 hidden_size: int = 64, image_size=(8, 8)):
        super().__init__()
        self.in_channels = int(in_channels)
        self.image_size = tuple(image_size) if isinstance(image_size, (tuple, list)) else (image_size,) * 2
        self.conv = nn.Conv2d(in_channels, conv_channels, kernel_size=3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        height, width = self.image_size
        self.lstm = nn.LSTM(conv_channels * (height // 2) * (width // 2), hidden_size, batch_first=True)
        self.fc = nn.Linear(hidden_size, num_classes)
        self._cache = None

    def forward(self, x):
        x = check_float_input(self, x)
        frame = (self.in_channels, *self.image_size)
        if x.ndim != 5 or x.shape[2:] != frame:
            raise ValueError(f"CNNLSTM expects input of shape (N, T, {', '.join(map(str, frame))}), "
                             f"got shape {tuple(x.shape)}")
        batch, steps = x.shape[:2]
        features = self.flatten(self.pool(self.relu(self.conv(x.reshape(batch * steps, *frame)))))
        output, _ = self.lstm(features.reshape(batch, steps, -1))
        self._cache = (x.shape, output.shape, output.dtype)
        return self.fc(output[:, -1])

    def backward(self, grad_output):
        input_shape, output_shape, dtype = self._saved(self._cache)
        # Only the last step's hidden state reaches the head; the other steps get zero.
        grad_lstm_output = np.zeros(output_shape, dtype)
        grad_lstm_output[:, -1] = self.fc.backward(grad_output)
        grad_features = self.lstm.backward(grad_lstm_output)
        grad_features = grad_features.reshape(input_shape[0] * input_shape[1], -1)
        grad = self.conv.backward(self.relu.backward(self.pool.backward(self.flatten.backward(grad_features))))
        return grad.reshape(input_shape)
