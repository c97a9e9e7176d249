"""Encoder/decoder pairs, by name.

A builder is `fn(input_shape, latent_dim, **arch_kwargs) -> (encoder, decoder)`; its
keyword arguments (and their defaults) are the architecture's hyperparameters, which
the registry reads from the signature. Encoders end in two separate linear heads for
mu and logvar; decoders end without an activation, returning the raw distribution
parameters the likelihood interprets. Nothing uses `.view`, so channels_last inputs and
models work unchanged.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from torch import Tensor, nn

Builder = Callable[..., tuple[nn.Module, nn.Module]]


class GaussianEncoder(nn.Module):
    """body(x) -> features, then separate linear heads for mu and logvar of q(z|x).

    Two heads, never one reused for both: sharing them ties the variance to the mean
    (the classic tutorial bug) and the posterior is no longer a free diagonal Gaussian.
    """

    def __init__(self, body: nn.Module, features: int, latent_dim: int) -> None:
        super().__init__()
        self.body = body
        self.mu = nn.Linear(features, latent_dim)
        self.logvar = nn.Linear(features, latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body(x)
        return self.mu(h), self.logvar(h)


# Hidden-unit nonlinearities by name (`model.activation`); ReLU unless a study says otherwise.
# tanh is what the IWAE paper's MNIST networks use (Burda et al., 2016).
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
}


def activation_layer(name: str) -> nn.Module:
    """A fresh hidden-unit nonlinearity; a ValueError lists the known names."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name]()


def dense_stack(dims: Sequence[int], activation: str = "relu") -> list[nn.Module]:
    """Linear+activation between consecutive sizes: (a, b, c) -> [Linear(a,b), act, Linear(b,c), act]."""
    layers: list[nn.Module] = []
    for d_in, d_out in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(d_in, d_out), activation_layer(activation)]
    return layers


def mlp(
    input_shape: tuple[int, int, int], latent_dim: int, hidden: Sequence[int] = (512, 256),
    activation: str = "relu",
) -> tuple[nn.Module, nn.Module]:
    """Fully connected: flatten -> hidden stack -> heads; the decoder mirrors the stack."""
    d = math.prod(input_shape)
    enc_dims = (d, *hidden)
    dec_dims = (latent_dim, *reversed(tuple(hidden)))
    encoder = GaussianEncoder(nn.Sequential(nn.Flatten(), *dense_stack(enc_dims, activation)), enc_dims[-1], latent_dim)
    decoder = nn.Sequential(
        *dense_stack(dec_dims, activation), nn.Linear(dec_dims[-1], d), nn.Unflatten(1, tuple(input_shape))
    )
    return encoder, decoder


def tutorial_mlp(input_shape: tuple[int, int, int], latent_dim: int = 8) -> tuple[nn.Module, nn.Module]:
    """The classic tutorial network D-128-64-32-16 -> 8-d latent and back (D = C*H*W).

    Kept as a reference point, with its bugs fixed: separate mu/logvar heads, raw decoder
    output, and (in the objectives) KL and reconstruction both summed per sample.
    """
    return mlp(input_shape, latent_dim, hidden=(128, 64, 32, 16))


def conv_sizes(height: int, width: int, levels: int) -> list[tuple[int, int]]:
    """Spatial size before each stride-2 level and after the last: k=4, s=2, p=1 floors H/2."""
    sizes = [(height, width)]
    for _ in range(levels):
        h, w = sizes[-1]
        sizes.append((h // 2, w // 2))
    if min(sizes[-1]) < 1:
        raise ValueError(f"input {height}x{width} is too small for {levels} stride-2 conv levels")
    return sizes


def conv(
    input_shape: tuple[int, int, int],
    latent_dim: int,
    channels: Sequence[int] = (32, 64),
    hidden: int = 256,
    activation: str = "relu",
) -> tuple[nn.Module, nn.Module]:
    """Stride-2 conv encoder (k=4, p=1) -> Linear(hidden) -> heads; mirrored decoder.

    Each conv level maps H to floor(H/2); the transposed conv maps h to 2h + output_padding,
    so output_padding = H - 2*floor(H/2) restores any size exactly (odd ones included,
    e.g. 28 -> 14 -> 7 -> 14 -> 28, or 7 -> 3 -> 7).
    """
    c_in, height, width = input_shape
    channels = tuple(channels)
    if not channels:
        raise ValueError("conv needs at least one entry in channels")
    sizes = conv_sizes(height, width, len(channels))
    h_last, w_last = sizes[-1]
    flat = channels[-1] * h_last * w_last

    down: list[nn.Module] = []
    for c_prev, c_next in zip((c_in, *channels[:-1]), channels):
        down += [nn.Conv2d(c_prev, c_next, kernel_size=4, stride=2, padding=1), activation_layer(activation)]
    body = nn.Sequential(*down, nn.Flatten(), nn.Linear(flat, hidden), activation_layer(activation))
    encoder = GaussianEncoder(body, hidden, latent_dim)

    up: list[nn.Module] = []
    for level in reversed(range(len(channels))):
        c_out = channels[level - 1] if level > 0 else c_in
        (h_out, w_out), (h_src, w_src) = sizes[level], sizes[level + 1]
        padding = (h_out - 2 * h_src, w_out - 2 * w_src)
        up.append(nn.ConvTranspose2d(channels[level], c_out, 4, stride=2, padding=1, output_padding=padding))
        if level > 0:
            up.append(activation_layer(activation))
    decoder = nn.Sequential(
        *dense_stack((latent_dim, hidden, flat), activation),
        nn.Unflatten(1, (channels[-1], h_last, w_last)),
        *up,
    )
    return encoder, decoder


ARCHITECTURES: dict[str, Builder] = {
    "mlp": mlp,
    "tutorial_mlp": tutorial_mlp,
    "conv": conv,
}
