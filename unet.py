"""Problem 3.1: the UNet of Ronneberger et al. (2015), Figure 5, with padded convolutions
so that the output has the input's size."""
import torch
import torch.nn as nn


def double_conv_block(in_channels, out_channels):
    """Two 3x3 convolutions (padding 1), each followed by a ReLU: keeps H and W."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
    )


class DecoderBlock(nn.Module):
    """One step up the expanding path: a 2x2 transposed convolution (stride 2) doubles
    H and W and maps ``in_channels`` to ``out_channels``; the result is concatenated
    with the encoder's feature map of the same size (upsampled map first) and refined
    by a double convolution.

    Shape: ``x`` ``[B, in, H, W]``, ``skip`` ``[B, out, 2H, 2W]`` -> ``[B, out, 2H, 2W]``.

    With ``skip=False`` (Problem 4.1's ablation) there is no concatenation and the
    double convolution takes ``out_channels``; ``forward`` then ignores ``skip``.
    """

    def __init__(self, in_channels, out_channels, skip=True):
        super(DecoderBlock, self).__init__()
        self.skip = skip
        self.upconv = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.conv = double_conv_block(2 * out_channels if skip else out_channels, out_channels)

    def forward(self, x, skip=None):
        x = self.upconv(x)
        if self.skip:
            x = torch.cat([x, skip], dim=1)
        return self.conv(x)


class UNet(nn.Module):
    """UNet for semantic segmentation.

    Args:
        input_shape: number of input channels (3 for RGB).
        num_classes: number of output channels (1 for binary segmentation).
        skip_connections: ``False`` builds Problem 4.1's variant, whose decoder sees
            only the upsampled path. The default is the graded UNet.
        base_channels: the channels of the first level, doubled at each of the four levels
            below (64, the default, is the graded UNet: 64 to 1024). A smaller one keeps every
            module and shape and checks a training script's plumbing in seconds.

    Shape: ``[B, input_shape, H, W]`` -> logits ``[B, num_classes, H, W]``, for H and W
    multiples of 16 (the four 2x2 poolings must divide evenly).
    """

    def __init__(self, input_shape, num_classes, skip_connections=True, base_channels=64):
        super(UNet, self).__init__()
        self.skip_connections = skip_connections
        c1 = base_channels                                # 64
        c2, c3, c4, c5 = 2 * c1, 4 * c1, 8 * c1, 16 * c1  # 128, 256, 512, 1024
        self.encoder_block1 = double_conv_block(input_shape, c1)
        self.encoder_block2 = double_conv_block(c1, c2)
        self.encoder_block3 = double_conv_block(c2, c3)
        self.encoder_block4 = double_conv_block(c3, c4)
        self.encoder_block5 = double_conv_block(c4, c5)  # the bottleneck
        self.pool = nn.MaxPool2d(2)

        self.decoder_block1 = DecoderBlock(c5, c4, skip_connections)
        self.decoder_block2 = DecoderBlock(c4, c3, skip_connections)
        self.decoder_block3 = DecoderBlock(c3, c2, skip_connections)
        self.decoder_block4 = DecoderBlock(c2, c1, skip_connections)
        self.outconv = nn.Conv2d(c1, num_classes, kernel_size=1)

    def forward(self, x):
        height, width = x.shape[-2:]
        if x.dim() != 4 or height % 16 or width % 16:
            raise ValueError(f"UNet takes [B, C, H, W] inputs with H and W multiples of 16 "
                             f"(four 2x2 poolings); got shape {tuple(x.shape)}: pad or crop the image")
        e1 = self.encoder_block1(x)
        e2 = self.encoder_block2(self.pool(e1))
        e3 = self.encoder_block3(self.pool(e2))
        e4 = self.encoder_block4(self.pool(e3))
        bottleneck = self.encoder_block5(self.pool(e4))

        d1 = self.decoder_block1(bottleneck, e4)
        d2 = self.decoder_block2(d1, e3)
        d3 = self.decoder_block3(d2, e2)
        d4 = self.decoder_block4(d3, e1)
        return self.outconv(d4)
