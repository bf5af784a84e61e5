"""The documents' multilayer perceptron for MNIST: 784 → 512 → 256 → 10 with ReLU."""
from dlcourse import nn

__all__ = ["MLP"]


class MLP(nn.Module):
    """Fully connected classifier: flatten, then Linear + ReLU (+ Dropout) per hidden layer.

    Layers are named as in the documents' PyTorch code (`fc1`, `fc2`, `fc3`, …), so its
    `state_dict` loads into a torch model written the same way.

    Shape:
        input: (N, *) with prod(*) = in_features (e.g. (N, 1, 28, 28) or (N, 784))
        output: (N, num_classes) logits
    """

    def __init__(self, in_features: int = 784, hidden_sizes=(512, 256), num_classes: int = 10,
                 dropout: float = 0.0):
        super().__init__()
        self.in_features = in_features
        sizes = [in_features, *hidden_sizes, num_classes]
        self.flatten = nn.Flatten()
        self.num_layers = len(sizes) - 1
        for index in range(self.num_layers):
            setattr(self, f"fc{index + 1}", nn.Linear(sizes[index], sizes[index + 1]))
            if index < self.num_layers - 1:
                setattr(self, f"relu{index + 1}", nn.ReLU())
                if dropout:
                    setattr(self, f"dropout{index + 1}", nn.Dropout(dropout))
        # The order in which forward visits the sub-modules; backward walks it in reverse.
        self._order = [name for name, _ in self.named_children()]

    def forward(self, x):
        for name in self._order:
            x = getattr(self, name)(x)
        return x

    def backward(self, grad_output):
        for name in reversed(self._order):
            grad_output = getattr(self, name).backward(grad_output)
        return grad_output
