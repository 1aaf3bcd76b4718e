"""The networks of the experiments, built from tinygrad_bn.nn and initialised from one generator."""

import math

import numpy as np

from .. import nn

MNIST_PIXELS = 28 * 28
NUM_CLASSES = 10


def _linear(fan_in, fan_out, bias, std, generator):
    """Linear layer with N(0, std^2) weights and zero bias, drawn from `generator`."""
    # the layer's own (PyTorch) init is overwritten: give it a throwaway generator so that
    # `generator` feeds only our draws, and nets with and without biases get equal weights
    layer = nn.Linear(fan_in, fan_out, bias=bias, generator=np.random.default_rng(0))
    nn.init.normal_(layer.weight, 0.0, std, generator=generator)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


def fig1_mlp(batch_norm, init_std, generator, hidden=(100, 100, 100)):
    """Figure 1's 784-100-100-100-10 sigmoid MLP, with BatchNorm1d before each hidden sigmoid.

    With batch_norm the hidden Linear layers have no bias: BN's beta takes its role (paper
    Section 3.2). Both variants draw the same weights from the same seed, so the only
    difference between them is BN.
    """
    layers, fan_in = [], MNIST_PIXELS
    for width in hidden:
        layers.append(_linear(fan_in, width, not batch_norm, init_std, generator))
        if batch_norm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(nn.Sigmoid())
        fan_in = width
    layers.append(_linear(fan_in, NUM_CLASSES, True, init_std, generator))
    return nn.Sequential(*layers)


def last_sigmoid_index(model):
    """Position in `model` (a Sequential) of the last hidden nonlinearity: its input is probed."""
    layers = list(model)
    for i in range(len(layers) - 1, -1, -1):
        if isinstance(layers[i], (nn.Sigmoid, nn.ReLU)):
            return i
    raise ValueError("model has no Sigmoid or ReLU layer to probe")


def forward_probed(model, x, probe_index):
    """(logits, input of layer `probe_index`): one forward pass through a Sequential."""
    probed = None
    for i, layer in enumerate(model):
        if i == probe_index:
            probed = x
        x = layer(x)
    return x, probed


def claims_convnet(
    batch_norm, activation, dropout, generator, dropout_generator=None, channels=(8, 16)
):
    """A small conv net for the Section 4.2 claims: [conv3x3-(BN)-act-maxpool2] x 2, linear.

    (N, 1, 28, 28) -> (N, 10). Weights are He-normal (std sqrt(2 / fan_in)) from `generator`,
    the same draw for every variant; convolutions before BatchNorm2d have no bias. `dropout`
    (a probability, 0 for none) acts on the flattened features before the classifier and draws
    its masks from `dropout_generator` (saved in checkpoints, so a resumed run is exact).
    """
    act = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid}[activation]
    layers, c_in, size = [], 1, 28
    for c_out in channels:
        conv = nn.Conv2d(
            c_in,
            c_out,
            3,
            stride=1,
            padding=1,
            bias=not batch_norm,
            generator=np.random.default_rng(0),
        )  # overwritten below
        nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / (c_in * 9)), generator=generator)
        if not batch_norm:
            nn.init.zeros_(conv.bias)
        layers.append(conv)
        if batch_norm:
            layers.append(nn.BatchNorm2d(c_out))
        layers += [act(), nn.MaxPool2d(2)]
        c_in, size = c_out, size // 2
    layers.append(nn.Flatten())
    if dropout:
        layers.append(nn.Dropout(dropout, generator=dropout_generator))
    features = c_in * size * size
    layers.append(_linear(features, NUM_CLASSES, True, math.sqrt(2.0 / features), generator))
    return nn.Sequential(*layers)
