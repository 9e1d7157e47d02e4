"""Gradual fusion decoder: three up-sampling stages from the 1/32 cost embedding to 1/4,
guided by the encoder's features and the cost volume, with one early-rejection head
before each stage.

Everything except class aggregation acts on each class map alone, so those steps run
``chunk_size`` maps at a time: memory stays bounded for large vocabularies (ADE-847) and
the outputs do not change.
"""
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from .decoder_stage import DecoderStage
from .early_rejection import select_top_classes

# Class maps per chunk when none is configured, by device type: on CPU a chunk's activations
# stay in cache; on GPU fewer, larger kernels.
AUTO_CHUNK_SIZE = {"cpu": 4, "cuda": 128}


def store(buffer: Optional[torch.Tensor], part: slice, value: torch.Tensor, total: int) -> torch.Tensor:
    """Write the chunk ``value`` (N, C, h, w) at rows ``part`` of ``buffer`` (total, C, h, w),
    allocated (channels-last) at the first chunk: chunks are never held twice, as by a cat."""
    if buffer is None:
        buffer = torch.empty((total, *value.shape[1:]), dtype=value.dtype, device=value.device,
                             memory_format=torch.channels_last)
    buffer[part] = value
    return buffer


class GradualFusionDecoder(nn.Module):
    def __init__(
        self,
        *,
        hidden_dim: int,
        decoder_dims: Sequence[int],
        guidance_dims: Sequence[int],
        encoder_channels: Sequence[int],
        num_templates: int,
        kernel_sizes: Sequence[int],
        num_heads: int,
        pooling_size: Sequence[int],
        chunk_size: int,
    ):
        """
        Args:
            hidden_dim: width of the cost embedding (stage 1 input).
            decoder_dims: output width of each stage.
            guidance_dims: width of the encoder and cost-map guidance fused by each stage.
            encoder_channels: widths of the encoder features guiding each stage (res4, res3, res2).
            num_templates: P, the channels of the cost volume.
            chunk_size: class maps processed together by the per-class steps (0: by device,
                ``AUTO_CHUNK_SIZE``).
        """
        super().__init__()
        in_dims = [hidden_dim, *decoder_dims[:-1]]
        self.chunk_size = chunk_size
        self.encoder_guidance = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, g, kernel_size=3, padding=1), nn.ReLU())
            for c, g in zip(encoder_channels, guidance_dims)
        )
        self.cost_guidance = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose2d(c, g, kernel_size=2, stride=2), nn.ReLU())
            for c, g in zip([num_templates, *guidance_dims[:-1]], guidance_dims)
        )
        self.stages = nn.ModuleList(
            DecoderStage(
                in_dim=i, out_dim=o, guidance_dim=g, kernel_size=k,
                num_heads=num_heads, pooling_size=pooling_size,
            )
            for i, o, g, k in zip(in_dims, decoder_dims, guidance_dims, kernel_sizes)
        )
        self.rejection_heads = nn.ModuleList(nn.Conv2d(d, 1, kernel_size=3, padding=1) for d in in_dims)
        self.head = nn.Conv2d(decoder_dims[-1], 1, kernel_size=3, padding=1)

    def project_guidance(self, features: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """Encoder features (B, C_i, 2^i h, 2^i w) -> guidance (B, g_i, 2^i h, 2^i w)."""
        return [proj(f) for proj, f in zip(self.encoder_guidance, features)]

    def run_stage(
        self, i: int, x: torch.Tensor, cost_guidance: torch.Tensor, guidance: torch.Tensor, num_classes: int
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Stage ``i`` on the class maps of B images (image-major), chunk by chunk.

        Args:
            x: (B*T, C_i, h, w) class maps.
            cost_guidance: (B*T, g_{i-1}, h, w) previous level of the cost-map guidance
                (the cost volume (B*T, P, h, w) for the first stage).
            guidance: (B, g_i, 2h, 2w) encoder guidance of this stage.
        Returns:
            the next class maps (B*T, C_{i+1}, 2h, 2w), or the final logits (B*T, 1, 2h, 2w)
            after the last stage; and this stage's cost-map guidance (B*T, g_i, 2h, 2w)
            (not kept after the last stage).
        """
        stage, project = self.stages[i], self.cost_guidance[i]
        last = i == len(self.stages) - 1
        chunk_size = self.chunk_size or AUTO_CHUNK_SIZE.get(x.device.type, 128)
        x = stage.aggregate(x, num_classes, chunk_size)
        out = levels = None
        for image in range(x.shape[0] // num_classes):
            encoder_term = stage.encoder_term(guidance[image : image + 1])
            end = (image + 1) * num_classes
            for start in range(image * num_classes, end, chunk_size):
                part = slice(start, min(start + chunk_size, end))
                level = project(cost_guidance[part])
                y = stage.upsample_fuse(x[part], encoder_term, level)
                out = store(out, part, self.head(y) if last else y, x.shape[0])
                if not last:
                    levels = store(levels, part, level, x.shape[0])
        return out, levels

    def forward(
        self, embedding: torch.Tensor, cost: torch.Tensor, guidance: Sequence[torch.Tensor]
    ) -> List[torch.Tensor]:
        """All classes through every stage.

        Args:
            embedding: (B*T, hidden, h, w) cost embedding.
            cost: (B, T, P, h, w) cost volume.
            guidance: projected encoder guidance of each stage, (B, g_i, 2^i h, 2^i w).
        Returns:
            logits [final (B, T, 8h, 8w), rejection head i (B, T, 2^i h, 2^i w) for i = 0, 1, 2];
            the rejection heads only in training, where they see detached features: they learn
            to rank classes without training the decoder.
        """
        batch, num_classes = cost.shape[:2]
        x, cost_guidance = embedding, cost.flatten(0, 1)
        aux = []
        for i, reject in enumerate(self.rejection_heads):
            if self.training:
                aux.append(reject(x.detach()).view(batch, num_classes, *x.shape[-2:]))
            x, cost_guidance = self.run_stage(i, x, cost_guidance, guidance[i], num_classes)
        return [x.view(batch, num_classes, *x.shape[-2:]), *aux]

    def forward_fast(
        self, embedding: torch.Tensor, cost: torch.Tensor, guidance: Sequence[torch.Tensor], topk: int
    ) -> torch.Tensor:
        """Category early rejection: before each stage keep only the classes that rank in the
        top ``topk`` of the stage's rejection head at some pixel. Each image is decided on its
        own, so an image gets the same output in any batch.

        Returns:
            (B, T, 8h, 8w) probabilities; rejected classes are exactly 0.
        """
        batch, num_classes = cost.shape[:2]
        maps = embedding.view(batch, num_classes, *embedding.shape[1:])
        outputs = []
        for b in range(batch):
            x, cost_guidance = maps[b], cost[b]
            kept = torch.arange(num_classes, device=x.device)
            for i, reject in enumerate(self.rejection_heads):
                selected = select_top_classes(reject(x)[:, 0], topk)
                x, kept, cost_guidance = x[selected], kept[selected], cost_guidance[selected]
                x, cost_guidance = self.run_stage(i, x, cost_guidance, guidance[i][b : b + 1], len(kept))
            probs = x.new_zeros(num_classes, *x.shape[-2:])
            probs[kept] = x[:, 0].sigmoid()
            outputs.append(probs)
        return torch.stack(outputs)
