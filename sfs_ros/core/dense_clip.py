"""Text-aligned patch features from one CLIP image-encoder pass (the ClearCLIP trick).

A CLIP ViT's patch tokens are not aligned with text: only the pooled class token is trained to
be. MaskCLIP / ClearCLIP showed that changing the last transformer block recovers usable dense
features: use self-self (query-query) attention, drop the residual connection and the MLP, then
apply the usual final norm and projection to every patch token. One pass per frame then serves
every mask of it, so labeling cost no longer grows with the number of masks.

Works for open_clip's standard VisionTransformer (ViT-B-32, ViT-B-16, ViT-L-14, ...).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from sfs_ros.core.frame import SfsError


def check_dense_support(visual: torch.nn.Module) -> None:
    """Dense mode needs a plain ViT with class-token pooling; say so plainly otherwise."""
    needed = ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "ln_post", "proj")
    missing = [name for name in needed if getattr(visual, name, None) is None]
    if missing or getattr(visual, "attn_pool", None) is not None:
        raise SfsError(f"dense labeling needs an open_clip ViT image tower; {type(visual).__name__} "
                       f"lacks {missing or ['plain class-token pooling']}: use labeling mode 'crop'")


class DenseClip:
    """Patch embeddings in CLIP's joint space for an image of any size (multiple of the patch)."""

    def __init__(self, visual: torch.nn.Module) -> None:
        check_dense_support(visual)
        self.visual = visual
        self.patch = visual.conv1.kernel_size[0]
        grid = visual.grid_size
        self.train_grid = (grid, grid) if isinstance(grid, int) else tuple(grid)
        self._pos_cache: dict[tuple[int, int], torch.Tensor] = {}

    def _positions(self, gh: int, gw: int) -> torch.Tensor:
        """Positional embeddings resized (bicubic) from the training grid to (gh, gw)."""
        key = (gh, gw)
        if key not in self._pos_cache:
            pos = self.visual.positional_embedding
            cls_pos, patch_pos = pos[:1], pos[1:]
            th, tw = self.train_grid
            if (gh, gw) != (th, tw):
                grid = patch_pos.reshape(1, th, tw, -1).permute(0, 3, 1, 2)
                grid = F.interpolate(grid.float(), size=(gh, gw), mode="bicubic", align_corners=False)
                patch_pos = grid.permute(0, 2, 3, 1).reshape(gh * gw, -1).to(pos.dtype)
            self._pos_cache[key] = torch.cat([cls_pos, patch_pos])
        return self._pos_cache[key]

    def trunk(self, pixels: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """Tokens (B, 1 + gh*gw, width) entering the last block, and the patch grid."""
        v = self.visual
        x = v.conv1(pixels)
        gh, gw = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self._positions(gh, gw).to(x.dtype)
        x = v.ln_pre(x)
        batch_first = getattr(v.transformer, "batch_first", True)
        if not batch_first:
            x = x.transpose(0, 1)
        for block in v.transformer.resblocks[:-1]:
            x = block(x)
        if not batch_first:
            x = x.transpose(0, 1)
        return x, gh, gw

    def tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, gh*gw, D) L2-normalised text-aligned patch
        features: the whole dense computation, and the graph core/backends/clip.py exports."""
        x, _, _ = self.trunk(pixels)
        x = self._clear_attention(self.visual.transformer.resblocks[-1], x)
        tokens = self.visual.ln_post(x[:, 1:]) @ self.visual.proj
        return F.normalize(tokens.float(), dim=-1)

    def grid(self, pixels: torch.Tensor) -> tuple[int, int]:
        """The patch grid (gh, gw) of an input."""
        return pixels.shape[-2] // self.patch, pixels.shape[-1] // self.patch

    @torch.inference_mode()
    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """(1, 3, H, W) normalised image -> (gh, gw, D) L2-normalised text-aligned features."""
        return self.tokens(pixels)[0].reshape(*self.grid(pixels), -1)

    @staticmethod
    def _clear_attention(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Last block as query-query attention, without residual and MLP (ClearCLIP)."""
        attn = block.attn
        y = block.ln_1(x)
        d, heads = y.shape[-1], attn.num_heads
        w, b = attn.in_proj_weight, attn.in_proj_bias
        q = F.linear(y, w[:d], b[:d] if b is not None else None)
        val = F.linear(y, w[2 * d :], b[2 * d :] if b is not None else None)
        split = lambda t: t.reshape(t.shape[0], t.shape[1], heads, d // heads).transpose(1, 2)  # noqa: E731
        out = F.scaled_dot_product_attention(split(q), split(q), split(val))
        out = out.transpose(1, 2).reshape(x.shape)
        return attn.out_proj(out)
