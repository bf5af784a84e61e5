"""Residual networks (He et al., 2015), chapter 9, with torchvision's module names.

A residual block learns a correction F(x) that is added to its own input:

    y = relu(F(x) + shortcut(x)),   F = bn2 ∘ conv2 ∘ relu ∘ bn1 ∘ conv1

The shortcut is the identity, or a 1×1 convolution + batch norm (`downsample`) where the
block changes the number of channels or the resolution. In the backward pass x was used
twice, so its gradient is the sum of the gradient through F and the gradient through the
shortcut: dx = dF(x)ᵀ g + dshortcut(x)ᵀ g with g = relu'(·) ⊙ dy. The shortcut term is why
very deep stacks still pass a useful gradient to their first layers.
"""
from dlcourse import nn
from dlcourse.nn import init
from dlcourse.nn.module import check_float_input

__all__ = ["BasicBlock", "ResNet", "resnet18", "resnet34"]


class BasicBlock(nn.Module):
    r"""Two 3×3 convolutions with batch norm and a residual shortcut (torchvision's BasicBlock).

    Sub-modules `conv1`, `bn1`, `relu`, `conv2`, `bn2` and, when stride ≠ 1 or
    in_planes ≠ planes, `downsample` = Sequential(Conv2d 1×1 with stride, BatchNorm2d):
    keys `layer1.0.conv1.weight`, `layer2.0.downsample.0.weight`, … as torchvision's.

    Shape:
        input: (N, in_planes, H, W)
        output: (N, planes, ⌈H/stride⌉, ⌈W/stride⌉)
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes * self.expansion:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes * self.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * self.expansion))
        else:
            self.downsample = None
        self.stride = stride
        # torchvision applies its one `relu` twice; ours caches what its backward needs,
        # so the second use gets its own instance, kept out of the module tree (and repr).
        object.__setattr__(self, "_relu_out", nn.ReLU())
        self._cache = None

    def forward(self, x):
        self._cache = x.shape
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self._relu_out(out + shortcut)

    def backward(self, grad_output):
        self._saved(self._cache)
        grad = self._relu_out.backward(grad_output)
        grad_residual = self.conv1.backward(self.bn1.backward(self.relu.backward(
            self.conv2.backward(self.bn2.backward(grad)))))
        grad_shortcut = grad if self.downsample is None else self.downsample.backward(grad)
        return grad_residual + grad_shortcut


class ResNet(nn.Module):
    r"""torchvision's ResNet, with two options for small images.

        stem → layer1 (width) → layer2 (2·width, /2) → layer3 (4·width, /2)
             → layer4 (8·width, /2) → global average pool → fc

    Args:
        block: the residual block class (`BasicBlock`).
        layers: blocks per stage, e.g. [2, 2, 2, 2] for ResNet-18.
        num_classes: outputs of `fc`.
        in_channels: input channels (1 for the digits; torchvision's 3 for RGB).
        width: channels of the stem and first stage (torchvision: 64); stages double it.
        small_input: True (default) for 8×8 digits: a 3×3 stride-1 stem and no max-pool
            (`maxpool` is an Identity), so the image is not shrunk to nothing before layer1.
            False: torchvision's 7×7 stride-2 stem and 3×3 stride-2 max-pool.

    Parameters are initialised as torchvision does: convolutions kaiming_normal_
    (fan_out, ReLU gain), batch-norm γ = 1, β = 0, `fc` as a default Linear.

    Shape:
        input: (N, in_channels, H, W)
        output: (N, num_classes) logits
    """

    def __init__(self, block, layers, num_classes: int = 10, in_channels: int = 1, width: int = 64,
                 small_input: bool = True):
        super().__init__()
        if len(layers) != 4 or any(int(n) < 1 for n in layers):
            raise ValueError(f"ResNet expects four positive block counts, got layers={list(layers)}")
        self.in_channels = int(in_channels)
        self.small_input = small_input
        self.in_planes = int(width)
        if small_input:
            self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.maxpool = nn.Identity() if small_input else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 8 * width, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * width * block.expansion, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                init.ones_(module.weight)
                init.zeros_(module.bias)
        self._cache = None

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1):
        layers = [block(self.in_planes, planes, stride)]
        self.in_planes = planes * block.expansion
        layers += [block(self.in_planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _stages(self):
        return [self.conv1, self.bn1, self.relu, self.maxpool,
                self.layer1, self.layer2, self.layer3, self.layer4, self.avgpool]

    def forward(self, x):
        x = check_float_input(self, x)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"ResNet expects input of shape (N, {self.in_channels}, H, W), "
                             f"got shape {tuple(x.shape)}")
        for stage in self._stages():
            x = stage(x)
        self._cache = x.shape
        return self.fc(x.reshape(len(x), -1))  # torch.flatten(x, 1)

    def backward(self, grad_output):
        pooled_shape = self._saved(self._cache)
        grad = self.fc.backward(grad_output).reshape(pooled_shape)
        for stage in reversed(self._stages()):
            grad = stage.backward(grad)
        return grad


def resnet18(**kwargs) -> ResNet:
    """ResNet-18: BasicBlock × [2, 2, 2, 2]; keyword arguments go to `ResNet`."""
    return ResNet(BasicBlock, [2, 2, 2, 2], **kwargs)


def resnet34(**kwargs) -> ResNet:
    """ResNet-34: BasicBlock × [3, 4, 6, 3]; keyword arguments go to `ResNet`."""
    return ResNet(BasicBlock, [3, 4, 6, 3], **kwargs)
