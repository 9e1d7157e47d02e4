"""Two-way Dynamic Embedding Experts (``tdee``): gated mixing of a proposal's pooled neck
features and its pooled ViT features."""
import torch
import torch.nn.functional as F
from torch import nn


class DynamicEmbeddingExperts(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dynamic_layer = nn.Linear(dim, 2 * dim)
        self.input_layer = nn.Linear(dim, 2 * dim)
        self.update_router = nn.Linear(dim, dim)
        self.input_router = nn.Linear(dim, dim)
        self.norm_in = nn.LayerNorm(dim)
        self.norm_out = nn.LayerNorm(dim)
        self.input_norm_in = nn.LayerNorm(dim)
        self.input_norm_out = nn.LayerNorm(dim)
        self.fc_layer = nn.Linear(dim, dim)
        self.fc_norm = nn.LayerNorm(dim)

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """u, v: (B, N, C) the two experts' inputs -> (B, N, C)."""
        a_in, a_out = self.dynamic_layer(u).chunk(2, dim=-1)
        b_in, b_out = self.input_layer(v).chunk(2, dim=-1)
        routed = a_in * b_in
        gate_u = self.norm_in(self.update_router(routed)).sigmoid()
        gate_v = self.input_norm_in(self.input_router(routed)).sigmoid()
        mixed = gate_u * self.norm_out(a_out) + gate_v * self.input_norm_out(b_out)
        return F.gelu(self.fc_norm(self.fc_layer(mixed)))
