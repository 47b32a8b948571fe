"""Problem 2.4-2.5: MobileNet (Howard et al., 2017, arXiv:1704.04861), without the
width multiplier alpha and the resolution multiplier rho."""
import torch
import torch.nn as nn


class DepthwiseSeparableConv(nn.Module):
    """Figure 3 (right) of the paper: 3x3 depthwise conv, BN, ReLU, then 1x1 pointwise
    conv, BN, ReLU.

    The depthwise conv filters each input channel on its own (``groups=in_channels``);
    the pointwise conv mixes channels. Together they cost
    ``9 * in + in * out`` weights instead of ``9 * in * out`` for a standard 3x3 conv.

    Shape: ``[B, in_channels, H, W]`` -> ``[B, out_channels, H', W']`` with
    ``H' = ceil(H / (stride_dw * stride_pw))`` (likewise W').
    """

    def __init__(self, in_channels, out_channels, stride_dw, stride_pw):
        super(DepthwiseSeparableConv, self).__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=stride_dw, padding=1,
                                   groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.pointwise = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride_pw, padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.relu(self.bn1(self.depthwise(x)))
        return self.relu(self.bn2(self.pointwise(x)))


# The assignment's text calls the block by this name.
DepthwiseSeparableBlock = DepthwiseSeparableConv


class MobileNet(nn.Module):
    """Table 1 of the paper, with the classifier sized to ``num_classes``.

    ``forward`` ends in the table's softmax and returns probabilities
    ``[B, num_classes]`` that sum to 1. Train on :meth:`forward_logits` (the
    pre-softmax scores): ``nn.CrossEntropyLoss`` applies its own log-softmax.

    The global average pool makes any input size work: 224x224 gives a 7x7 map
    before the pool, PathMNIST's 28x28 a 1x1 map.
    """

    def __init__(self, num_classes):
        super(MobileNet, self).__init__()
        self.conv0 = nn.Sequential(
            nn.Conv2d(3, 32, kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
        )
        self.dw_sep_conv0 = DepthwiseSeparableConv(32, 64, stride_dw=1, stride_pw=1)
        self.dw_sep_conv1 = DepthwiseSeparableConv(64, 128, stride_dw=2, stride_pw=1)
        self.dw_sep_conv2 = DepthwiseSeparableConv(128, 128, stride_dw=1, stride_pw=1)
        self.dw_sep_conv3 = DepthwiseSeparableConv(128, 256, stride_dw=2, stride_pw=1)
        self.dw_sep_conv4 = DepthwiseSeparableConv(256, 256, stride_dw=1, stride_pw=1)
        self.dw_sep_conv5 = DepthwiseSeparableConv(256, 512, stride_dw=2, stride_pw=1)
        # The table's "5x" row.
        self.dw_sep_conv61 = DepthwiseSeparableConv(512, 512, stride_dw=1, stride_pw=1)
        self.dw_sep_conv62 = DepthwiseSeparableConv(512, 512, stride_dw=1, stride_pw=1)
        self.dw_sep_conv63 = DepthwiseSeparableConv(512, 512, stride_dw=1, stride_pw=1)
        self.dw_sep_conv64 = DepthwiseSeparableConv(512, 512, stride_dw=1, stride_pw=1)
        self.dw_sep_conv65 = DepthwiseSeparableConv(512, 512, stride_dw=1, stride_pw=1)
        self.dw_sep_conv7 = DepthwiseSeparableConv(512, 1024, stride_dw=2, stride_pw=1)
        # The paper prints s2 on this row, but its input-size column (7x7 in, 7x7 out) says 1.
        self.dw_sep_conv8 = DepthwiseSeparableConv(1024, 1024, stride_dw=1, stride_pw=1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(1024, num_classes)
        self.softmax = nn.Softmax(dim=1)

    def forward_logits(self, x):
        """``[B, 3, H, W]`` -> pre-softmax class scores ``[B, num_classes]``."""
        x = self.conv0(x)
        x = self.dw_sep_conv0(x)
        x = self.dw_sep_conv1(x)
        x = self.dw_sep_conv2(x)
        x = self.dw_sep_conv3(x)
        x = self.dw_sep_conv4(x)
        x = self.dw_sep_conv5(x)
        x = self.dw_sep_conv61(x)
        x = self.dw_sep_conv62(x)
        x = self.dw_sep_conv63(x)
        x = self.dw_sep_conv64(x)
        x = self.dw_sep_conv65(x)
        x = self.dw_sep_conv7(x)
        x = self.dw_sep_conv8(x)
        x = self.avgpool(x)
        return self.fc(torch.flatten(x, 1))

    def forward(self, x):
        """``[B, 3, H, W]`` -> class probabilities ``[B, num_classes]`` (softmax)."""
        return self.softmax(self.forward_logits(x))
