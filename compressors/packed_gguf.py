"""A linear layer stored as llama.cpp blocks (Q4_K, Q5_K, Q6_K, Q8_0, ...), bytes exactly as in a GGUF.

Why a packed type of its own: the GGUF k-quant compressor lets llama.cpp's own quantizer choose the
blocks (its per-tensor type mix and, with an importance matrix, its weighted rounding). Keeping those
bytes unchanged means that Shrinkwise measures exactly what llama.cpp will run, and that the GGUF
export writes them back bit for bit. Rows are kept in Hugging Face's row order; the GGUF writer applies
llama.cpp's Q/K row permutation, which moves whole rows and so whole blocks.

The forward dequantizes with the ``gguf`` package's reference dequantizer (float fallback: there is no
k-quant matmul kernel in torch); llama.cpp runs the same bytes on its own kernels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from compressors.packed import PackedModule, register_packed


def _ggml_type(name: str) -> Any:
    from gguf import GGMLQuantizationType

    try:
        return GGMLQuantizationType[name]
    except KeyError:
        raise ValueError(f"unknown llama.cpp block type {name!r}") from None


@register_packed
class GGUFBlockLinear(PackedModule):
    """``blocks``: ``uint8 [out, bytes per row]``, one row of llama.cpp blocks per output feature."""

    packed_type = "gguf_block_linear"
    blocks: torch.Tensor
    bias: torch.Tensor | None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        ggml_type: str,
        blocks: torch.Tensor,
        bias: torch.Tensor | None,
    ) -> None:
        super().__init__(in_features, out_features)
        from gguf import GGML_QUANT_SIZES

        qtype = _ggml_type(ggml_type)
        block, size = GGML_QUANT_SIZES[qtype]
        if in_features % block:
            raise ValueError(f"{ggml_type} needs rows that are a multiple of {block}; got {in_features}")
        expect = (out_features, in_features // block * size)
        if tuple(blocks.shape) != expect or blocks.dtype != torch.uint8:
            raise ValueError(
                f"{ggml_type} blocks must be uint8 {expect}; got {blocks.dtype} {tuple(blocks.shape)}"
            )
        self.ggml_type = ggml_type
        self.register_buffer("blocks", blocks)
        self.register_buffer("bias", bias)

    def packed_state(self) -> dict[str, torch.Tensor]:
        state = {"blocks": self.blocks}
        if self.bias is not None:
            state["bias"] = self.bias
        return state

    def meta(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "ggml_type": self.ggml_type,
        }

    @classmethod
    def from_packed(cls, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> GGUFBlockLinear:
        return cls(
            meta["in_features"], meta["out_features"], meta["ggml_type"], state["blocks"], state.get("bias")
        )

    def dequantize(self) -> torch.Tensor:
        from gguf.quants import dequantize

        rows = dequantize(self.blocks.numpy(), _ggml_type(self.ggml_type))
        return torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32)).reshape(
            self.out_features, self.in_features
        )
