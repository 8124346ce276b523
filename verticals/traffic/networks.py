"""Forecasting networks in plain torch. Inputs (B, T_in, N, F), outputs (B, T_out, N) in
scaled units.

- `SensorGRU`: one GRU shared by all sensors, each sensor on its own: the per-sensor
  recurrent baseline. It cannot see a neighbour's queue coming.
- `GraphWaveNet` (Wu et al., 2019): gated dilated temporal convolutions, each followed by a
  diffusion graph convolution over the road graph (forward and backward transitions) and
  an adaptive adjacency learned from node embeddings; skip connections to the output.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def transitions(weights: np.ndarray) -> list[torch.Tensor]:
    """Forward and backward random-walk matrices D^-1 W and D^-1 W^T (self-loops added)."""
    out = []
    for matrix in (weights, weights.T):
        w = matrix + np.eye(len(matrix), dtype=matrix.dtype)
        out.append(torch.from_numpy((w / w.sum(1, keepdims=True)).astype(np.float32)))
    return out


class SensorGRU(nn.Module):
    def __init__(self, in_dim: int, out_steps: int, hidden: int = 64) -> None:
        super().__init__()
        self.gru = nn.GRU(in_dim, hidden, batch_first=True)
        self.head = nn.Linear(hidden, out_steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, n, f = x.shape
        seq = x.permute(0, 2, 1, 3).reshape(b * n, t, f)
        _, h = self.gru(seq)
        return self.head(h[-1]).reshape(b, n, -1).permute(0, 2, 1)


class DiffusionConv(nn.Module):
    """Sum over supports A and hops k of A^k x, mixed by a 1x1 convolution."""

    def __init__(self, channels: int, n_supports: int, order: int, dropout: float) -> None:
        super().__init__()
        self.order = order
        self.mix = nn.Conv2d(channels * (1 + n_supports * order), channels, 1)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, supports: list[torch.Tensor]) -> torch.Tensor:
        out = [x]
        for a in supports:
            h = x
            for _ in range(self.order):
                h = torch.einsum("bcnt,nm->bcmt", h, a.to(h.dtype))
                out.append(h)
        return F.dropout(self.mix(torch.cat(out, dim=1)), self.dropout, self.training)


class GraphWaveNet(nn.Module):
    def __init__(
        self,
        weights: np.ndarray,
        in_dim: int,
        out_steps: int,
        channels: int = 32,
        layers: int = 8,
        adaptive: bool = True,
        embedding: int = 10,
        order: int = 2,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        n = len(weights)
        for i, support in enumerate(transitions(weights)):
            self.register_buffer(f"support_{i}", support)
        self.adaptive = adaptive
        if adaptive:
            self.source = nn.Parameter(torch.randn(n, embedding) * 0.1)
            self.target = nn.Parameter(torch.randn(embedding, n) * 0.1)
        n_supports = 2 + int(adaptive)
        self.dilations = [1 + i % 2 for i in range(layers)]
        self.receptive = 1 + sum(self.dilations)
        skip, end = 4 * channels, 8 * channels
        self.start = nn.Conv2d(in_dim, channels, 1)
        self.filters = nn.ModuleList(
            nn.Conv2d(channels, channels, (1, 2), dilation=(1, d)) for d in self.dilations
        )
        self.gates = nn.ModuleList(
            nn.Conv2d(channels, channels, (1, 2), dilation=(1, d)) for d in self.dilations
        )
        self.skips = nn.ModuleList(nn.Conv2d(channels, skip, 1) for _ in self.dilations)
        self.graph = nn.ModuleList(
            DiffusionConv(channels, n_supports, order, dropout) for _ in self.dilations
        )
        self.norms = nn.ModuleList(nn.BatchNorm2d(channels) for _ in self.dilations)
        self.end1 = nn.Conv2d(skip, end, 1)
        self.end2 = nn.Conv2d(end, out_steps, 1)

    def supports(self) -> list[torch.Tensor]:
        fixed = [self.support_0, self.support_1]
        if self.adaptive:
            fixed.append(F.softmax(F.relu(self.source @ self.target), dim=1))
        return fixed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 2, 1)  # (B, F, N, T)
        if x.shape[-1] < self.receptive:
            x = F.pad(x, (self.receptive - x.shape[-1], 0))
        x = self.start(x)
        supports = self.supports()
        skip: torch.Tensor | int = 0
        for filt, gate, to_skip, graph, norm in zip(
            self.filters, self.gates, self.skips, self.graph, self.norms, strict=True
        ):
            residual = x
            x = torch.tanh(filt(x)) * torch.sigmoid(gate(x))
            s = to_skip(x)
            skip = s + (skip[..., -s.shape[-1] :] if isinstance(skip, torch.Tensor) else 0)
            x = graph(x, supports) + residual[..., -x.shape[-1] :]
            x = norm(x)
        assert isinstance(skip, torch.Tensor)
        out = F.relu(self.end1(F.relu(skip[..., -1:])))
        return self.end2(out)[..., 0]  # (B, out_steps, N)


def build(name: str, model: dict, weights: np.ndarray, in_dim: int, out_steps: int) -> nn.Module:
    if name == "gwnet":
        return GraphWaveNet(
            weights, in_dim, out_steps, int(model["channels"]), int(model["layers"]),
            bool(model["adaptive"]), int(model["embedding"]), int(model["diffusion_steps"]),
            float(model["dropout"]),
        )  # fmt: skip
    if name == "gru":
        return SensorGRU(in_dim, out_steps, int(model["gru_hidden"]))
    from verticals.core.errors import UserError

    raise UserError(f"model.name={name!r} is not one of gwnet, gru")
