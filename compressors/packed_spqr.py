"""SpQR's storage: low-bit codes, 3-bit quantized group statistics, and fp16 outliers in CSR.

What one :class:`SpQRLinear` holds (Dettmers et al., arXiv 2306.03078, section 4):

* ``qweight``: the ``bits``-wide codes of every weight, packed with :func:`compressors.packed.pack_bits`,
  in quantization order (columns permuted by ``perm`` when act-order was used, so groups of ``beta1``
  consecutive storage columns share statistics);
* ``scale_q`` / ``zero_q``: each group's scale and zero as ``qq_bits``-wide codes ``[out, n_groups]``;
* ``scale_stats`` / ``zero_stats``: float16 ``[ceil(out / beta2), n_groups, 2]`` second-level (scale, zero)
  shared by ``beta2`` consecutive rows, from which the first-level statistics are reconstructed;
* outliers in CSR: ``row_ptr`` int32 ``[out + 1]``, ``col_idx`` int16 (int32 for inputs wider than
  32767) in original column order, ``values`` float16; they overwrite the grid value at their position.

:meth:`SpQRLinear.paper_bits_per_param` gives the paper's count (codes + statistics + 32 bits per
outlier); :meth:`stored_bits` counts every stored bit, including ``row_ptr`` and ``perm``, which the
paper leaves out.
"""

from __future__ import annotations

from typing import Any

import torch

from compressors.ops.spqr import SpQRResult, spqr_bits_per_param
from compressors.packed import PackedModule, pack_bits, register_packed, unpack_bits


def _stats_values(codes: torch.Tensor, stats: torch.Tensor, beta2: int) -> torch.Tensor:
    """First-level statistic ``[out, n_groups]`` from its codes and fp16 second-level stats."""
    rows = codes.shape[0]
    s2 = stats[..., 0].float().repeat_interleave(beta2, dim=0)[:rows]
    z2 = stats[..., 1].float().repeat_interleave(beta2, dim=0)[:rows]
    return s2 * (codes.float() - z2)


@register_packed
class SpQRLinear(PackedModule):
    """A linear layer stored in SpQR's sparse-quantized representation (see module docstring)."""

    packed_type = "spqr_linear"
    # buffers (registered in __init__), declared so the checker knows them as tensors, not submodules
    qweight: torch.Tensor
    scale_q: torch.Tensor
    zero_q: torch.Tensor
    scale_stats: torch.Tensor
    zero_stats: torch.Tensor
    perm: torch.Tensor | None
    row_ptr: torch.Tensor
    col_idx: torch.Tensor
    values: torch.Tensor
    bias: torch.Tensor | None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bits: int,
        beta1: int,
        beta2: int,
        qq_bits: int,
        qweight: torch.Tensor,
        scale_q: torch.Tensor,
        zero_q: torch.Tensor,
        scale_stats: torch.Tensor,
        zero_stats: torch.Tensor,
        perm: torch.Tensor | None,
        row_ptr: torch.Tensor,
        col_idx: torch.Tensor,
        values: torch.Tensor,
        bias: torch.Tensor | None,
    ) -> None:
        super().__init__(in_features, out_features)
        self.bits, self.beta1, self.beta2, self.qq_bits = int(bits), int(beta1), int(beta2), int(qq_bits)
        for name, t in (
            ("qweight", qweight),
            ("scale_q", scale_q),
            ("zero_q", zero_q),
            ("scale_stats", scale_stats),
            ("zero_stats", zero_stats),
            ("perm", perm),
            ("row_ptr", row_ptr),
            ("col_idx", col_idx),
            ("values", values),
            ("bias", bias),
        ):
            self.register_buffer(name, t)

    @property
    def n_groups(self) -> int:
        return self.scale_stats.shape[1]

    @property
    def n_outliers(self) -> int:
        return int(self.values.numel())

    @classmethod
    def from_result(cls, r: SpQRResult, bias: torch.Tensor | None = None) -> SpQRLinear:
        out_f, in_f = r.codes.shape
        perm = None
        if r.perm is not None and not torch.equal(r.perm, torch.arange(in_f)):
            perm = r.perm.to(torch.int16 if in_f <= 32767 else torch.int32)
        col_dtype = torch.int16 if in_f <= 32767 else torch.int32
        return cls(
            in_f,
            out_f,
            r.bits,
            r.beta1,
            r.beta2,
            r.qq_bits,
            pack_bits(r.codes, r.bits),
            pack_bits(r.scale.codes, r.qq_bits),
            pack_bits(r.zero.codes, r.qq_bits),
            r.scale.stats.contiguous(),
            r.zero.stats.contiguous(),
            perm,
            r.row_ptr.to(torch.int32),
            r.col_idx.to(col_dtype),
            r.values.to(torch.float16),
            None if bias is None else bias.detach().clone(),
        )

    def dequantize(self) -> torch.Tensor:
        out_f, in_f, g = self.out_features, self.in_features, self.n_groups
        q = unpack_bits(self.qweight, self.bits, (out_f, in_f)).float()
        s = _stats_values(unpack_bits(self.scale_q, self.qq_bits, (out_f, g)), self.scale_stats, self.beta2)
        s = s.clamp_min(1e-10)
        z = _stats_values(unpack_bits(self.zero_q, self.qq_bits, (out_f, g)), self.zero_stats, self.beta2)
        gidx = torch.arange(in_f) // self.beta1
        w = s[:, gidx] * (q - z[:, gidx])
        if self.perm is not None:
            w = w[:, torch.argsort(self.perm.long())]
        if self.n_outliers:
            rows = torch.repeat_interleave(torch.arange(out_f), (self.row_ptr[1:] - self.row_ptr[:-1]).long())
            w[rows, self.col_idx.long()] = self.values.float()
        return w

    def paper_bits_per_param(self) -> float:
        """Average bits per parameter as the SpQR paper counts them (no row_ptr, no permutation)."""
        return spqr_bits_per_param(
            self.bits, self.qq_bits, self.beta1, self.beta2, self.n_outliers / self.n_weights
        )

    def packed_state(self) -> dict[str, torch.Tensor]:
        state = {
            k: getattr(self, k)
            for k in (
                "qweight",
                "scale_q",
                "zero_q",
                "scale_stats",
                "zero_stats",
                "row_ptr",
                "col_idx",
                "values",
            )
        }
        for k in ("perm", "bias"):
            if getattr(self, k) is not None:
                state[k] = getattr(self, k)
        return state

    def meta(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bits": self.bits,
            "beta1": self.beta1,
            "beta2": self.beta2,
            "qq_bits": self.qq_bits,
            "n_outliers": self.n_outliers,
            "paper_bits_per_param": round(self.paper_bits_per_param(), 4),
        }

    @classmethod
    def from_packed(cls, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> SpQRLinear:
        return cls(
            meta["in_features"],
            meta["out_features"],
            meta["bits"],
            meta["beta1"],
            meta["beta2"],
            meta["qq_bits"],
            state["qweight"],
            state["scale_q"],
            state["zero_q"],
            state["scale_stats"],
            state["zero_stats"],
            state.get("perm"),
            state["row_ptr"],
            state["col_idx"],
            state["values"],
            state.get("bias"),
        )
