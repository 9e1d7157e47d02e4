"""Gradual fusion decoder: three up-sampling stages from the 1/32 cost embedding to 1/4,
guided by the encoder's features and the cost volume, with one early-rejection head
before each stage.

Everything except class aggregation acts on each class map alone, so those steps run
``chunk_size`` maps at a time: memory stays bounded for large vocabularies (ADE-847) and
the outputs do not change. In training with ``checkpoint_chunks`` the chunks' activations
are recomputed in the backward pass instead of kept (``forward_checkpointed``).
"""
from functools import partial
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from .chunks import chunk_sizes, map_chunks
from .decoder_stage import DecoderStage
from .early_rejection import select_top_classes

# Class maps per chunk when none is configured, by device type: on CPU a chunk's activations
# stay in cache; on GPU fewer, larger kernels.
AUTO_CHUNK_SIZE = {"cpu": 4, "cuda": 128}


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
        checkpoint_chunks: bool,
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
            checkpoint_chunks: in training, recompute the per-class chunks in the backward
                pass instead of keeping their activations (same gradients, less memory).
        """
        super().__init__()
        in_dims = [hidden_dim, *decoder_dims[:-1]]
        self.chunk_size = chunk_size
        self.checkpoint_chunks = checkpoint_chunks
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

    def class_chunk_size(self, device: torch.device) -> int:
        """Class maps per chunk on ``device``."""
        return self.chunk_size or AUTO_CHUNK_SIZE.get(device.type, 128)

    @property
    def recompute(self) -> bool:
        """Whether the chunks are recomputed in the backward pass now (training with
        ``checkpoint_chunks``, gradients enabled)."""
        return self.checkpoint_chunks and self.training and torch.is_grad_enabled()

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
        chunk_size = self.class_chunk_size(x.device)

        def upsample_fuse(maps, previous_level, encoder_term):
            """A chunk of N class maps of one image -> the next maps (N, C_{i+1}, 2h, 2w) and
            cost-map guidance (N, g_i, 2h, 2w), or the logits (N, 1, 2h, 2w) after the last stage."""
            level = project(previous_level)
            y = stage.upsample_fuse(maps, encoder_term, level)
            return self.head(y) if last else (y, level)

        x = stage.aggregate(x, num_classes, chunk_size)
        sizes = chunk_sizes(x.shape[0], chunk_size, num_classes)
        encoder_terms = [stage.encoder_term(guidance[image : image + 1]) for image in range(x.shape[0] // num_classes)]
        chunks_per_image = len(sizes) // len(encoder_terms)
        extras = [(encoder_terms[k // chunks_per_image],) for k in range(len(sizes))]
        out = map_chunks(upsample_fuse, [x, cost_guidance], sizes, extras)
        return (out, None) if last else out

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
        if self.recompute:
            return self.forward_checkpointed(embedding, cost, guidance)
        batch, num_classes = cost.shape[:2]
        x, cost_guidance = embedding, cost.flatten(0, 1)
        aux = []
        for i, reject in enumerate(self.rejection_heads):
            if self.training:
                aux.append(reject(x.detach()).view(batch, num_classes, *x.shape[-2:]))
            x, cost_guidance = self.run_stage(i, x, cost_guidance, guidance[i], num_classes)
        return [x.view(batch, num_classes, *x.shape[-2:]), *aux]

    def enter(self, embedding: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """A chunk of N cost-embedding maps (N, hidden, h, w) -> stage 0's spatially aggregated
        maps (N, hidden, h, w) and rejection logits (N, 1, h, w)."""
        return self.stages[0].spatial(embedding), self.rejection_heads[0](embedding.detach())

    def cross(
        self, i: int, maps: torch.Tensor, attention: torch.Tensor, cost: torch.Tensor, encoder_term: torch.Tensor
    ):
        """A chunk of N class maps of one image from stage ``i``'s class aggregation to the next
        stage's spatial aggregation.

        Args:
            maps: (N, C_i, h, w) spatially aggregated maps of stage i.
            attention: (N, C_i, h', w') their class-attention output (``ClassAggregation.attend``).
            cost: (N, P, h_0, w_0) cost volume, from which the cost-map guidance is recomputed.
            encoder_term: (1, C_{i+1}, 2h, 2w) from ``DecoderStage.encoder_term``.
        Returns:
            stage i+1's spatially aggregated maps (N, C_{i+1}, 2h, 2w) and rejection logits
            (N, 1, 2h, 2w); after the last stage, the logits (N, 1, 2h, 2w).
        """
        stage, level = self.stages[i], cost
        for project in self.cost_guidance[: i + 1]:
            level = project(level)
        x = stage.upsample_fuse(stage.classes.add_upsampled(maps, attention), encoder_term, level)
        if i == len(self.stages) - 1:
            return self.head(x)
        return self.stages[i + 1].spatial(x), self.rejection_heads[i + 1](x.detach())

    def forward_checkpointed(
        self, embedding: torch.Tensor, cost: torch.Tensor, guidance: Sequence[torch.Tensor]
    ) -> List[torch.Tensor]:
        """``forward`` (training) with every per-class step recomputed in the backward pass: the
        same logits, for one more forward computation of the decoder.

        The chunks run from one stage's class aggregation to the next's (``cross``), so that
        across classes only the embedding, the cost volume and, per stage, the spatially
        aggregated maps, their pooled copies and the class-attention outputs are kept; the
        cost-map guidance is recomputed from the cost volume in each chunk. Same arguments and
        outputs as ``forward``.
        """
        batch, num_classes = cost.shape[:2]
        sizes = chunk_sizes(batch * num_classes, self.class_chunk_size(cost.device), num_classes)
        chunks_per_image = len(sizes) // batch
        cost = cost.flatten(0, 1)
        modules = [self.stages[0].spatial, self.rejection_heads[0]]
        maps, rejection = map_chunks(self.enter, [embedding], sizes, recompute=True, modules=modules)
        aux = [rejection]
        for i, stage in enumerate(self.stages):
            attention = stage.classes.attend(maps, num_classes, recompute=True)
            encoder_terms = [stage.encoder_term(guidance[i][image : image + 1]) for image in range(batch)]
            extras = [(encoder_terms[k // chunks_per_image],) for k in range(len(sizes))]
            last = i == len(self.stages) - 1
            after = [self.head] if last else [self.stages[i + 1].spatial, self.rejection_heads[i + 1]]
            modules = [*self.cost_guidance[: i + 1], stage.up, stage.fuse, *after]
            out = map_chunks(partial(self.cross, i), [maps, attention, cost], sizes, extras, recompute=True,
                             modules=modules)
            if not last:
                maps, rejection = out
                aux.append(rejection)
        return [t.view(batch, num_classes, *t.shape[-2:]) for t in [out, *aux]]

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
                x, cost_guidance = self.run_stage(i, x, cost_guidance, guidance[i][b : b + 1], kept.shape[0])
            probs = x.new_zeros(num_classes, *x.shape[-2:])
            probs[kept] = x[:, 0].sigmoid()
            outputs.append(probs)
        return torch.stack(outputs)
