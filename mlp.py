"""Problem 1: a multilayer perceptron written from tensor operations."""
import math
from typing import List, Tuple

import torch
from torch import nn


class Linear(nn.Module):
    r"""Applies a linear transformation to the incoming data: :math:`y = xA^T + b`.

    Args:
        in_features: size of each input sample
        out_features: size of each output sample

    Shape:
        - Input: :math:`(*, H_{in})`, where :math:`*` is any number of leading
          dimensions (none included) and :math:`H_{in} = \text{in\_features}`.
        - Output: :math:`(*, H_{out})`, all but the last dimension as in the input,
          :math:`H_{out} = \text{out\_features}`.

    Attributes:
        weight: trainable, shape ``(out_features, in_features)``
        bias: trainable, shape ``(out_features,)``

    Same numbers as ``torch.nn.Linear`` holding the same weight and bias. The
    parameters start at zero (``MLP`` initialises them): finite and deterministic,
    and drawing no random numbers, so a seeded ``MLP`` draws the template's weights.

        >>> m = Linear(20, 30)
        >>> m(torch.randn(128, 20)).size()
        torch.Size([128, 30])
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super(Linear, self).__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.zeros(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """
            :param input: [*, in_features]
            :return result [*, out_features]
        """
        return input @ self.weight.T + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class MLP(torch.nn.Module):
    ACTIVATIONS = ("tanh", "relu", "sigmoid")

    def __init__(self, input_size: int, hidden_sizes: List[int], num_classes: int, activation: str = "relu"):
        super(MLP, self).__init__()
        self.input_size = input_size
        self.hidden_sizes = hidden_sizes
        assert len(hidden_sizes) >= 1, "The MLP needs at least one hidden layer: hidden_sizes is empty"
        self.num_classes = num_classes
        self.activation = activation
        assert activation in self.ACTIVATIONS, (
            f"Invalid activation {activation!r}: choose one of {', '.join(self.ACTIVATIONS)}")

        self.hidden_layers, self.output_layer = self._build_layers(input_size, hidden_sizes, num_classes)

        # Initialisation
        self._initialize_linear_layer(self.output_layer)
        for layer in self.hidden_layers:
            self._initialize_linear_layer(layer)

    def _build_layers(self, input_size: int,
                      hidden_sizes: List[int],
                      num_classes: int) -> Tuple[nn.ModuleList, nn.Module]:
        """
        Build the layers for MLP. Be ware of handling corner cases.
        :param input_size: An int
        :param hidden_sizes: A list of ints. E.g., for [32, 32] means two hidden layers with 32 each.
        :param num_classes: An int
        :Return:
            hidden_layers: nn.ModuleList. Within the list, each item has type nn.Module
            output_layer: nn.Module
        """
        sizes = [input_size, *hidden_sizes]
        hidden_layers = nn.ModuleList(Linear(n_in, n_out) for n_in, n_out in zip(sizes[:-1], sizes[1:]))
        output_layer = Linear(sizes[-1], num_classes)
        return hidden_layers, output_layer

    def activation_fn(self, activation, inputs: torch.Tensor) -> torch.Tensor:
        """ process the inputs through different non-linearity function according to activation name """
        if activation == "relu":
            return torch.relu(inputs)
        if activation == "tanh":
            return torch.tanh(inputs)
        if activation == "sigmoid":
            return torch.sigmoid(inputs)
        raise ValueError(f"Invalid activation {activation!r}: choose one of {', '.join(self.ACTIVATIONS)}")

    def _initialize_linear_layer(self, module: Linear) -> None:
        """ For bias set to zeros. For weights set to glorot normal:
        W ~ N(0, std^2) with std = sqrt(2 / (fan_in + fan_out)) (Glorot & Bengio, 2010). """
        fan_out, fan_in = module.weight.shape
        std = math.sqrt(2.0 / (fan_in + fan_out))
        with torch.no_grad():
            module.weight.normal_(0.0, std)
            module.bias.zero_()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """ Forward images and compute logits.
        1. The images are first flattened to vectors.
        2. Forward the result to each layer in the self.hidden_layer with activation_fn
        3. Finally forward the result to the output_layer.

        :param images: [batch, channels, width, height] or [batch, features]
        :return logits: [batch, num_classes]
        """
        x = images.flatten(start_dim=1)
        for layer in self.hidden_layers:
            x = self.activation_fn(self.activation, layer(x))
        return self.output_layer(x)
