"""A VQ-VAE (van den Oord et al. 2017) as a vaebench plugin: an MLP encoder to `positions`
vectors of size `code_dim`, each replaced by its nearest of `codebook` learned codes, a
Bernoulli decoder, the straight-through estimator for the encoder's gradient.

As a latent-variable model its posterior is deterministic (one-hot on the nearest code at each
position) and its prior uniform over the K codes, so KL(q || p) = log K per position, a
constant: ELBO = -recon - positions * log K, in nats per example. Training optimises
recon + the codebook and commitment terms (beta = 0.25), never reported as the ELBO.

Capabilities: `elbo`, `codes` (the quantised vectors, flattened) and `sample` (codes drawn
uniformly from the prior). No `posterior`: an importance-weighted bound is not defined for it,
so `test_iwae_ll` and `active_units` are NaN with that reason.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vaebench.models import LossRecord, register


@register("model", "vqvae")
class VQVAE(nn.Module):
    capabilities = frozenset({"elbo", "codes", "sample"})

    def __init__(self, input_shape: tuple[int, int, int], latent_dim: int, codebook: int = 64,
                 positions: int = 8, hidden: int = 256, commitment: float = 0.25) -> None:
        super().__init__()
        self.shape, self.positions, self.code_dim, self.commitment = tuple(input_shape), positions, latent_dim, commitment
        d = math.prod(input_shape)
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, positions * latent_dim))
        self.codes_table = nn.Embedding(codebook, latent_dim)
        nn.init.uniform_(self.codes_table.weight, -1 / codebook, 1 / codebook)
        self.decoder = nn.Sequential(nn.Linear(positions * latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, d))

    def _quantise(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(encoder output, nearest codes), both (B, positions, code_dim)."""
        z = self.encoder(x).view(len(x), self.positions, self.code_dim)
        index = torch.cdist(z.flatten(0, 1), self.codes_table.weight).argmin(1)
        return z, self.codes_table(index).view_as(z)

    def codes(self, x: Tensor) -> Tensor:
        return self._quantise(x)[1].flatten(1)

    def reconstruct(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.decoder(self.codes(x))).view(-1, *self.shape)

    forward = reconstruct

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        device = self.codes_table.weight.device
        index = torch.randint(self.codes_table.num_embeddings, (n * self.positions,), generator=generator).to(device)
        return torch.sigmoid(self.decoder(self.codes_table(index).view(n, -1))).view(-1, *self.shape)

    def loss(self, x: Tensor, kl_weight: float = 1.0, generator: torch.Generator | None = None) -> LossRecord:
        z, q = self._quantise(x)
        straight = z + (q - z).detach()  # the decoder sees the codes; the encoder gets their gradient
        logits = self.decoder(straight.flatten(1))
        recon = F.binary_cross_entropy_with_logits(logits, x.flatten(1), reduction="none").sum(1)
        kl = torch.full_like(recon, self.positions * math.log(self.codes_table.num_embeddings))
        vq = ((q - z.detach()) ** 2).sum((1, 2)) + self.commitment * ((z - q.detach()) ** 2).sum((1, 2))
        return LossRecord(loss=(recon + vq).mean(), recon=recon, kl=kl, elbo=-(recon + kl))
