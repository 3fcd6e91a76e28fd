"""SpQR (Dettmers et al., arXiv 2306.03078): GPTQ with 16-column groups, 3-bit quantized group
statistics and fp16 outliers, stored as :class:`compressors.packed_spqr.SpQRLinear`.

The average bits per parameter is reported the way the paper counts it (``paper_bits_per_param`` in
each layer's info and in ``last_bits_per_param``): ``wbits + 2·qq_bits/beta1 + 64/(beta1·beta2) +
32·outlier_fraction``; the size on disk additionally holds CSR row pointers and the act-order permutation.

Streams block by block from a safetensors checkpoint (:mod:`compressors.streaming`, ``block_step``).
Precision: the block's forward and its calibration activations run in float32 (the driver's compute
dtype, as the whole-model path loads the model); the Hessian is accumulated in float32, and the
Cholesky factorisation, outlier detection and column sweep are float32; second-level statistics and
outliers are stored as float16. Both paths report the model-wide outlier share at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from compressors.base import (
    DEFAULT_CALIBRATION,
    Calibration,
    Compressor,
    CompressorConfig,
    CompressorId,
    CostEstimate,
    ModelShape,
    RunContext,
    check_choice,
    check_range,
    register,
)
from compressors.calibration import BlockStep, LayerStats, SolveFn, calibration_tokens, sequential_compress
from compressors.layers import get_bias, get_weight, set_attribute
from compressors.methods.layerwise import layerwise_estimate
from compressors.ops.spqr import spqr_quantize
from compressors.packed_spqr import SpQRLinear
from knowledge.ids import MethodId


@dataclass
class SpQRConfig(CompressorConfig):
    bits: int = field(
        default=3,
        metadata={"help": "Bits per weight (the paper's headline setting is 3)", "choices": [2, 3, 4]},
    )
    beta1: int = field(
        default=16,
        metadata={
            "help": "Weight group size (input columns per scale/zero)",
            "choices": [8, 16, 32, 64, 128],
        },
    )
    beta2: int = field(
        default=16,
        metadata={
            "help": "Output rows sharing the fp16 statistics of the quantized scales/zeros",
            "choices": [8, 16, 32, 64],
        },
    )
    qq_bits: int = field(
        default=3, metadata={"help": "Bits of the quantized group scales and zeros", "choices": [2, 3, 4]}
    )
    outlier_threshold: float = field(
        default=0.2,
        metadata={
            "help": "Relative sensitivity above which a weight is kept in fp16 (0.2 keeps about 1%); 0 disables outliers",
            "min": 0.0,
            "max": 10.0,
        },
    )
    act_order: bool = field(default=True, metadata={"help": "Quantize the most active input columns first"})
    percdamp: float = field(
        default=0.01,
        metadata={"help": "Hessian dampening, fraction of its mean diagonal", "min": 0.0, "max": 1.0},
    )
    true_sequential: bool = field(
        default=True, metadata={"help": "Calibrate each step of a block on the quantized previous steps"}
    )

    def __post_init__(self) -> None:
        check_choice("bits", self.bits, [2, 3, 4])
        check_choice("beta1", self.beta1, [8, 16, 32, 64, 128])
        check_choice("beta2", self.beta2, [8, 16, 32, 64])
        check_choice("qq_bits", self.qq_bits, [2, 3, 4])
        check_range("outlier_threshold", self.outlier_threshold, 0.0, 10.0)
        check_range("percdamp", self.percdamp, 0.0, 1.0)


@register
class SpQR(Compressor[SpQRConfig]):
    id = CompressorId("spqr")
    implements = (MethodId("spqr"),)
    name = "SpQR"
    phase = "post-training"
    impact = "static"
    needs_calibration = True
    config_cls = SpQRConfig
    summary = "GPTQ with tiny groups whose scales are themselves 3-bit, plus the ~1% most sensitive weights kept in fp16."

    def estimate(
        self, shape: ModelShape, config: SpQRConfig, calib: Calibration = DEFAULT_CALIBRATION
    ) -> CostEstimate:
        return layerwise_estimate(
            shape, "spqr", group_size=config.beta1, calib_samples=calib.samples, calib_seq=calib.seq_len
        )

    def block_step(self, config: SpQRConfig) -> BlockStep:
        """Calibrated on the Hessian (float32 statistics, Cholesky and sweep: see the module docstring);
        the same ``solve`` as :meth:`compress`, so the streamed and whole-model walks give one result."""
        totals = {"weights": 0, "outliers": 0}

        def finish(model: Any, ctx: RunContext) -> None:
            self._report_totals(config, totals, ctx)

        return BlockStep(
            stat="hessian",
            solve=self._solve(config, totals),
            true_sequential=config.true_sequential,
            stage="spqr",
            finish=finish,
        )

    @staticmethod
    def _solve(config: SpQRConfig, totals: dict[str, int] | None) -> SolveFn:
        """``totals``: when given, counts of quantized weights and outliers are added to it."""
        thr = float("inf") if config.outlier_threshold == 0 else config.outlier_threshold

        def solve(bi: int, name: str, layer: nn.Module, stats: LayerStats) -> nn.Module | None:
            r = spqr_quantize(
                get_weight(layer).detach(),
                stats.value,
                bits=config.bits,
                beta1=config.beta1,
                beta2=config.beta2,
                qq_bits=config.qq_bits,
                outlier_threshold=thr,
                act_order=config.act_order,
                percdamp=config.percdamp,
            )
            new = SpQRLinear.from_result(r, get_bias(layer))
            if totals is not None:
                totals["weights"] += r.codes.numel()
                totals["outliers"] += new.n_outliers
            set_attribute(
                new,
                "_solve_info",
                {"loss": r.loss, "outliers": r.outlier_fraction, "paper_bits": r.bits_per_param},
            )  # read back by sequential_compress
            return new

        return solve

    def compress(self, model: Any, tokenizer: Any, config: SpQRConfig, ctx: RunContext) -> Any:
        totals = {"weights": 0, "outliers": 0}
        self.last_report = sequential_compress(
            model,
            calibration_tokens(ctx),
            "hessian",
            self._solve(config, totals),
            ctx,
            true_sequential=config.true_sequential,
            stage="spqr",
        )
        self._report_totals(config, totals, ctx)
        return model

    def _report_totals(self, config: SpQRConfig, totals: dict[str, int], ctx: RunContext) -> None:
        """The model-wide outlier share and average bits per parameter (paper's count), kept as
        ``last_outlier_fraction`` / ``last_bits_per_param`` and reported."""
        from compressors.ops.spqr import spqr_bits_per_param

        frac = totals["outliers"] / max(totals["weights"], 1)
        self.last_outlier_fraction = frac
        self.last_bits_per_param = spqr_bits_per_param(
            config.bits, config.qq_bits, config.beta1, config.beta2, frac
        )
        ctx.report(
            "spqr",
            1.0,
            f"outliers {frac:.3%}, average {self.last_bits_per_param:.3f} bits per parameter (paper's count)",
        )
