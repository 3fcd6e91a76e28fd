"""Settings every training compressor shares, with their checks (one place, so the forms agree)."""

from __future__ import annotations

from dataclasses import dataclass, field

from compressors.base import CompressorConfig, ConfigError, check_range


def check_int(name: str, value: object, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}={value!r} must be an integer between {lo} and {hi}")
    check_range(name, value, lo, hi)


def check_float(name: str, value: object, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name}={value!r} must be a number between {lo} and {hi}")
    check_range(name, float(value), lo, hi)


@dataclass
class TrainingConfig(CompressorConfig):
    """Steps, learning rate and batch shape of the training part of a method."""

    steps: int = field(
        default=100,
        metadata={"help": "Optimizer steps of training (0 = no training)", "min": 0, "max": 100000},
    )
    lr: float = field(
        default=1e-4,
        metadata={
            "help": "Peak AdamW learning rate (warm-up 10% of steps, cosine decay to 10%)",
            "min": 1e-7,
            "max": 1e-1,
        },
    )
    batch_size: int = field(default=4, metadata={"help": "Token windows per step", "min": 1, "max": 1024})
    seq_len: int = field(
        default=128,
        metadata={
            "help": "Tokens per training window (calibration rows are cut into windows of this length)",
            "min": 8,
            "max": 8192,
        },
    )
    val_windows: int = field(
        default=8,
        metadata={
            "help": "Windows held back from training to measure perplexity inside the run",
            "min": 0,
            "max": 1024,
        },
    )

    def __post_init__(self) -> None:
        check_int("steps", self.steps, 0, 100000)
        check_float("lr", self.lr, 1e-7, 1e-1)
        check_int("batch_size", self.batch_size, 1, 1024)
        check_int("seq_len", self.seq_len, 8, 8192)
        check_int("val_windows", self.val_windows, 0, 1024)
