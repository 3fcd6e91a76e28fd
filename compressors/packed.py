"""Packed modules: how compressed layers really sit in memory and on disk, and the bit packing they use.

A quantized weight is not a float tensor that happens to hold few distinct values: it is stored as
``bits``-wide integers packed densely into ``int32`` words (eight 4-bit values per word; 3-bit values
run across word boundaries, 32 values in exactly three words), plus its scales and zero-points. A
pruned weight is stored as its non-zero values plus a bitmask (unstructured) or small per-group
indices (N:M). Every packed module says exactly how many bits it stores (:meth:`PackedModule.stored_bits`),
which is what the bits-per-weight figures and the size on disk are computed from.

Packed modules form a registry keyed by ``packed_type`` so :mod:`compressors.storage` can rebuild any of
them from ``packed_state()`` + ``meta()``; other modules (e.g. SpQR in ``compressors.packed_spqr``) add
their own types with :func:`register_packed`.

How a packed layer runs (see docs/formats.md, "Inference"): 4-bit and per-channel 8-bit
:class:`QuantizedLinear` layers run on torch's weight-only int4/int8 kernels (:mod:`compressors.kernels`)
and keep only the kernel's packed weight in memory: no float copy. Every other format (2/3-bit, 8-bit
with groups, sparse, SpQR, GGUF blocks, or a torch build whose kernel probe fails) dequantizes in its
forward pass into a **bounded** cache shared by all packed layers (:data:`DEQUANT_CACHE_ENV`, 1 GiB by
default, least recently used first out): a model whose float weights fit in the budget runs at float
speed; a bigger one dequantizes each layer per forward, slower but with RAM near the packed size.
"""

from __future__ import annotations

import math
import os
import sys
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from compressors import kernels

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11

SUPPORTED_BITS = (1, 2, 3, 4, 8)

# ---------------------------------------------------------------------------------------------------
# bit packing


def pack_bits(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integers ``0 <= q < 2**bits`` (any shape, read in row-major order) into an int32 vector.

    Values are laid out little-endian in a continuous bit stream: value ``i`` occupies bits
    ``[i*bits, (i+1)*bits)`` of the stream, word ``k`` holds stream bits ``[32k, 32k+32)``. So 3-bit
    values cross word boundaries and 32 of them take exactly 3 words (no padding to 4 bits). The stream
    is padded with zeros to a multiple of 32 values; ``unpack_bits`` needs the original shape back.
    """
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits={bits} is not supported; choose one of {list(SUPPORTED_BITS)}")
    flat = q.reshape(-1).to(torch.int64)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= (1 << bits)):
        raise ValueError(
            f"values must lie in [0, {1 << bits}) for {bits}-bit packing; "
            f"found range [{int(flat.min())}, {int(flat.max())}]"
        )
    n = flat.numel()
    n_pad = (-n) % 32
    if n_pad:
        flat = torch.cat([flat, flat.new_zeros(n_pad)])
    v = flat.view(-1, 32)  # 32 values -> exactly `bits` words
    words = torch.zeros(v.shape[0], bits, dtype=torch.int64, device=flat.device)
    for i in range(32):
        off = i * bits
        w, s = divmod(off, 32)
        words[:, w] |= (v[:, i] << s) & 0xFFFFFFFF
        if s + bits > 32:  # spills into the next word
            words[:, w + 1] |= v[:, i] >> (32 - s)
    words = words.reshape(-1)
    words = torch.where(words >= (1 << 31), words - (1 << 32), words)
    return words.to(torch.int32)


def unpack_bits(packed: torch.Tensor, bits: int, shape: tuple[int, ...] | torch.Size | int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: returns a ``uint8`` tensor of ``shape`` (values < 2**bits)."""
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits={bits} is not supported; choose one of {list(SUPPORTED_BITS)}")
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    n = math.prod(shape)
    n_groups = math.ceil(n / 32)
    if packed.numel() != n_groups * bits:
        raise ValueError(
            f"packed tensor has {packed.numel()} words; {n} values of {bits} bits need {n_groups * bits}"
        )
    if 8 % bits == 0 and sys.byteorder == "little":
        # 1/2/4/8 bits never cross a byte: the stream's bytes are the words' bytes in memory order, so
        # unpacking works on uint8 (no int64 temporaries 8x the size of the codes: this runs when a
        # layer builds its kernel weight, and a peak there is a peak of the loaded model's RAM)
        b = packed.contiguous().view(torch.uint8)
        per = 8 // bits
        if per == 1:
            return b[:n].clone().reshape(shape)
        parts = [(b >> (i * bits)) & ((1 << bits) - 1) for i in range(per)]
        return torch.stack(parts, dim=-1).reshape(-1)[:n].reshape(shape)
    words = packed.reshape(n_groups, bits).to(torch.int64) & 0xFFFFFFFF
    mask = (1 << bits) - 1
    out = torch.empty(n_groups, 32, dtype=torch.int64, device=packed.device)
    for i in range(32):
        off = i * bits
        w, s = divmod(off, 32)
        val = words[:, w] >> s
        if s + bits > 32:
            val = val | (words[:, w + 1] << (32 - s))
        out[:, i] = val & mask
    return out.reshape(-1)[:n].to(torch.uint8).reshape(shape)


def packed_words(n_values: int, bits: int) -> int:
    """Number of int32 words :func:`pack_bits` produces for ``n_values`` values."""
    return math.ceil(n_values / 32) * bits


# ---------------------------------------------------------------------------------------------------
# the bounded cache of dequantized weights (formats without a kernel)

DEQUANT_CACHE_ENV = "SHRINKWISE_DEQUANT_CACHE_MB"
DEFAULT_DEQUANT_CACHE_MB = 1024.0  # the demo (425 MB of float layers) fits; a 7B model (27 GB) does not


class DequantCache:
    """Least-recently-used float weights of packed layers that have no kernel, within a byte budget.

    One cache for the process (not one per layer), so RAM stays bounded however many layers a model
    has. The weight lives on the layer (``_w_cache``); the cache only decides who keeps theirs. A weight
    bigger than the whole budget is never kept (that layer dequantizes on every forward)."""

    def __init__(self) -> None:
        self._entries: OrderedDict[int, tuple[weakref.ref[PackedModule], int]] = OrderedDict()
        self.nbytes = 0

    @staticmethod
    def budget_bytes() -> int:
        raw = os.environ.get(DEQUANT_CACHE_ENV, "")
        try:
            mb = float(raw) if raw.strip() else DEFAULT_DEQUANT_CACHE_MB
        except ValueError:
            raise ValueError(
                f"{DEQUANT_CACHE_ENV}={raw!r} must be a number of MiB (0 turns the cache off)"
            ) from None
        return max(0, int(mb * 2**20))

    def touch(self, m: PackedModule) -> None:
        if id(m) in self._entries:
            self._entries.move_to_end(id(m))

    def admit(self, m: PackedModule, w: torch.Tensor) -> None:
        """Keep ``w`` as ``m``'s cached weight if it fits the budget, evicting the least recent ones."""
        self.drop(m)
        size = w.numel() * w.element_size()
        budget = self.budget_bytes()
        if size > budget:
            return
        while self._entries and self.nbytes + size > budget:
            key, (ref, old) = self._entries.popitem(last=False)
            self.nbytes -= old
            victim = ref()
            if victim is not None:
                victim._w_cache = None
        key = id(m)

        def gone(_ref: weakref.ref[PackedModule], k: int = key) -> None:
            self._forget(k)

        self._entries[key] = (weakref.ref(m, gone), size)
        self.nbytes += size
        m._w_cache = w

    def drop(self, m: PackedModule) -> None:
        m._w_cache = None
        self._forget(id(m))

    def _forget(self, key: int) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.nbytes -= entry[1]


DEQUANT_CACHE = DequantCache()

# ---------------------------------------------------------------------------------------------------
# registry and base class

_PACKED_TYPES: dict[str, type[PackedModule]] = {}


def register_packed(cls: type[PackedModule]) -> type[PackedModule]:
    """Class decorator: make a packed module type loadable by :mod:`compressors.storage`."""
    key = cls.packed_type
    if key in _PACKED_TYPES and _PACKED_TYPES[key] is not cls:
        raise ValueError(
            f"packed type {key!r} registered twice ({_PACKED_TYPES[key].__name__} and {cls.__name__})"
        )
    _PACKED_TYPES[key] = cls
    return cls


def packed_types() -> dict[str, type[PackedModule]]:
    """The registered packed module types (importing the modules that define more of them)."""
    _import_packed_providers()
    return dict(_PACKED_TYPES)


def get_packed_type(name: str) -> type[PackedModule]:
    _import_packed_providers()
    try:
        return _PACKED_TYPES[name]
    except KeyError:
        raise KeyError(f"unknown packed module type {name!r}; known: {sorted(_PACKED_TYPES)}") from None


def _import_packed_providers() -> None:
    """Modules that define packed types register them on import; import the ones that exist."""
    import importlib

    for mod in ("compressors.packed_spqr", "compressors.packed_gguf", "compressors.methods"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise


def _tensor_bits(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.numel() * t.element_size() * 8


class PackedModule(nn.Module):
    """Base of every packed (compressed) replacement of a linear layer.

    Subclasses hold their packed tensors as buffers, implement :meth:`packed_state`, :meth:`meta`,
    :meth:`from_packed` and :meth:`dequantize` (the ``[out, in]`` float weight), and are decorated with
    :func:`register_packed`. ``forward`` computes ``F.linear(x, W, bias)`` with the dequantized weight,
    kept in the bounded :data:`DEQUANT_CACHE` (``cache_dequantized = False``: never kept); subclasses
    with a real low-bit kernel override it.
    """

    packed_type: ClassVar[str]
    cache_dequantized: bool = True

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self._w_cache: torch.Tensor | None = None

    # -- what subclasses implement ------------------------------------------------------------------
    def packed_state(self) -> dict[str, torch.Tensor]:
        """Every tensor needed to rebuild the layer (what is written to disk)."""
        raise NotImplementedError

    def meta(self) -> dict[str, Any]:
        """JSON-serialisable scalars needed to rebuild the layer (written to the manifest)."""
        raise NotImplementedError

    @classmethod
    def from_packed(cls, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> PackedModule:
        raise NotImplementedError

    def dequantize(self) -> torch.Tensor:
        """The effective ``[out, in]`` float32 weight."""
        raise NotImplementedError

    # -- shared behaviour ---------------------------------------------------------------------------
    @property
    def n_weights(self) -> int:
        return self.in_features * self.out_features

    def n_params(self) -> int:
        """Parameters this layer stands for: its weights plus its bias."""
        b = getattr(self, "bias", None)
        return self.n_weights + (b.numel() if isinstance(b, torch.Tensor) else 0)

    def stored_bits(self) -> int:
        """Every bit stored for this layer (packed values, scales, zeros, indices, outliers, bias)."""
        return sum(_tensor_bits(t) for t in self.packed_state().values())

    def bits_per_weight(self) -> float:
        return self.stored_bits() / self.n_weights

    @property
    def weight(self) -> torch.Tensor:
        """Dequantized weight, for code that reads ``layer.weight`` (read-only view of the layer)."""
        return self._dequantized()

    def _dequantized(self) -> torch.Tensor:
        if self._w_cache is not None:
            DEQUANT_CACHE.touch(self)
            return self._w_cache
        w = self.dequantize()
        if self.cache_dequantized:
            DEQUANT_CACHE.admit(self, w)
        return w

    def clear_cache(self) -> None:
        DEQUANT_CACHE.drop(self)

    def runtime_bytes(self) -> int:
        """Bytes this layer holds at run time beyond its buffers (a cached float weight, kernel weights)."""
        w = self._w_cache
        return 0 if w is None else w.numel() * w.element_size()

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Self:
        # .to()/.half() invalidate the cached weight
        DEQUANT_CACHE.drop(self)
        nn.Module._apply(self, fn, recurse)  # converts the buffers in place and returns self
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self._dequantized()
        b = getattr(self, "bias", None)
        return F.linear(x, w.to(x.dtype), None if b is None else b.to(x.dtype))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bits/weight={self.bits_per_weight():.3f}"


def _as_bias(bias: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if bias is None else bias.detach().to(dtype).contiguous().clone()


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _dtype_from(name: str) -> torch.dtype:
    allowed = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
    if name not in allowed:
        raise ValueError(f"dtype {name!r} not allowed; choose one of {sorted(allowed)}")
    return allowed[name]


# ---------------------------------------------------------------------------------------------------
# grouped integer quantization


@register_packed
class QuantizedLinear(PackedModule):
    """Weight-only grouped integer quantization: ``W[r, c] = (q[r, c] - zero[r, g(c)]) * scale[r, g(c)]``.

    ``q`` has ``bits`` bits per weight, packed with :func:`pack_bits`. Columns fall into groups of
    ``group_size`` in quantization order: without act-order ``g(c) = c // group_size``; with act-order
    the columns were quantized in the order ``perm`` (``perm[j]`` is the j-th column quantized), so
    ``g(perm[j]) = j // group_size``. When ``group_size`` does not divide ``in_features`` the last group
    is shorter (SmolLM2's 576 columns with g=128 make 4 groups of 128 and one of 64).
    ``group_size=-1`` means one group per row (per-channel).

    Zero-points: a symmetric quantizer has one constant zero for every group (e.g. ``2**(bits-1)``),
    stored once in the metadata; otherwise integer zeros in ``[0, 2**bits)`` are packed with ``bits``
    bits, and non-integer zeros are stored as float16.
    """

    packed_type = "quantized_linear"
    # buffers (registered in __init__), declared so the checker knows them as tensors, not submodules
    qweight: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None
    perm: torch.Tensor | None
    bias: torch.Tensor | None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bits: int,
        group_size: int,
        qweight: torch.Tensor,
        scales: torch.Tensor,
        zeros: torch.Tensor | None,
        zero_const: float | None,
        zero_bits: int | None,
        perm: torch.Tensor | None,
        bias: torch.Tensor | None,
    ) -> None:
        super().__init__(in_features, out_features)
        self.bits = int(bits)
        self.group_size = int(group_size)
        self.zero_const = zero_const
        self.zero_bits = zero_bits  # None: zeros stored as float; int: packed with that many bits
        self.register_buffer("qweight", qweight)
        self.register_buffer("scales", scales)
        self.register_buffer("zeros", zeros)
        self.register_buffer("perm", perm)
        self.register_buffer("bias", bias)
        # the low-bit kernel's weight, built on the first forward on a device (see forward)
        self._kernel: kernels.Int4Weight | kernels.Int8Weight | None = None
        self._kernel_tried: str | None = None  # device type the kernel was last tried on
        self.kernel_note: str | None = None  # why no kernel runs this layer, once tried

    def __getattr__(self, name: str) -> Any:
        # Once a CPU kernel weight exists the layer drops its own packed codes (that copy would double
        # the layer's RAM); ``qweight`` is then rebuilt, bit for bit, from the kernel weight on access.
        if name == "qweight" and self._codes_dropped():
            return pack_bits(self._kernel_codes(), self.bits)
        return super().__getattr__(name)

    def _codes_dropped(self) -> bool:
        return self.__dict__.get("_kernel") is not None and self.__dict__["_buffers"].get("qweight") is None

    def _kernel_codes(self) -> torch.Tensor:
        k = self._kernel
        codes = kernels.int8_codes(k) if isinstance(k, kernels.Int8Weight) else None
        if isinstance(k, kernels.Int4Weight):
            codes = kernels.int4_codes(k)
        if codes is None:
            raise RuntimeError("the kernel weight of this layer cannot give its codes back")
        return codes

    @property
    def kernel(self) -> str | None:
        """The low-bit kernel this layer runs on ("int4", "int8"), or ``None`` (float fallback / not run yet)."""
        if isinstance(self._kernel, kernels.Int4Weight):
            return "int4"
        return "int8" if isinstance(self._kernel, kernels.Int8Weight) else None

    def kernel_unsupported_reason(self, device_type: str) -> str | None:
        """Why no low-bit kernel can run this layer on ``device_type`` (``None``: one can)."""
        if self.bits == 4:
            return kernels.int4_unsupported_reason(
                self.out_features, self.in_features, self.group_size, device_type
            )
        if self.bits == 8:
            return kernels.int8_unsupported_reason(
                self.out_features, self.in_features, self.group_size, device_type
            )
        return f"no {self.bits}-bit kernel (4-bit and 8-bit layers have one)"

    def prepare_kernel(self, device: torch.device | str = "cpu") -> bool:
        """Build the kernel weight now rather than on the first forward, so a freshly loaded model is
        packed-sized in RAM before it runs (and the loader can hand the freed codes back to the OS);
        ``False`` when this layer runs the float fallback."""
        return self._ensure_kernel(torch.device(device))

    def _ensure_kernel(self, device: torch.device) -> bool:
        """Build the kernel weight for ``device`` once; ``False`` when this layer runs the float fallback."""
        if self._kernel is not None:
            return True
        if self._kernel_tried == device.type:
            return False
        self._kernel_tried = device.type
        self.kernel_note = self.kernel_unsupported_reason(device.type)
        if self.kernel_note is not None:
            return False
        codes, scales, zeros = self.codes(), self.scales, self.zero_points()
        per_channel = self.group_size in (-1, self.in_features)
        if self.bits == 4:
            self._kernel = kernels.pack_int4(
                codes, scales, zeros, self.group_size, None if per_channel else self.perm
            )
        else:  # per-channel int8: one group, so the act-order does not change the weight's grouping
            self._kernel = kernels.pack_int8(codes, scales[:, 0], zeros[:, 0])
        del codes
        DEQUANT_CACHE.drop(self)
        if device.type == "cpu":
            self._buffers["qweight"] = None  # the kernel weight holds the codes now (see __getattr__)
        return True

    def runtime_bytes(self) -> int:
        return super().runtime_bytes() + (0 if self._kernel is None else self._kernel.nbytes())

    def _dequantized(self) -> torch.Tensor:
        # a layer on a kernel never keeps a float copy, even for code that reads ``layer.weight``
        if self._kernel is not None:
            return self.dequantize()
        return super()._dequantized()

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Self:
        # moving or converting the layer: restore the packed codes and rebuild the kernel where it runs next
        if self._codes_dropped():
            self.qweight = pack_bits(self._kernel_codes(), self.bits)
        self._kernel = None
        self._kernel_tried = None
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the kernels have no backward: a forward that needs gradients takes the float path
        if not (torch.is_grad_enabled() and x.requires_grad) and self._ensure_kernel(x.device):
            k = self._kernel
            y = kernels.int4_mm(x, k) if isinstance(k, kernels.Int4Weight) else kernels.int8_mm(x, k)  # type: ignore[arg-type]
            return y if self.bias is None else y + self.bias.to(y.dtype)
        return super().forward(x)

    @property
    def n_groups(self) -> int:
        return self.scales.shape[1]

    @property
    def effective_group_size(self) -> int:
        return self.in_features if self.group_size == -1 else self.group_size

    @classmethod
    def from_quantized(
        cls,
        q: torch.Tensor,
        scale: torch.Tensor,
        zero: torch.Tensor | float,
        bits: int,
        group_size: int,
        bias: torch.Tensor | None = None,
        perm: torch.Tensor | None = None,
        symmetric: bool = False,
        scale_dtype: torch.dtype = torch.float16,
    ) -> QuantizedLinear:
        """Build from integer codes ``q`` ``[out, in]`` and per-group ``scale``/``zero`` ``[out, n_groups]``.

        ``zero`` may be a scalar (symmetric). ``scale`` is stored as ``scale_dtype`` (float16 by
        default, as GPTQ checkpoints do), so the layer's forward is exactly what is saved.
        """
        if bits not in (2, 3, 4, 8):
            raise ValueError(f"bits={bits} is not supported; choose one of [2, 3, 4, 8]")
        if q.dim() != 2:
            raise ValueError(f"q must be [out, in]; got shape {tuple(q.shape)}")
        out_f, in_f = q.shape
        gs = in_f if group_size in (-1, 0, None) else int(group_size)
        if gs <= 0:
            raise ValueError(f"group_size={group_size} must be -1 (per channel) or positive")
        n_groups = math.ceil(in_f / gs)
        scale = torch.as_tensor(scale).detach().float()
        if scale.dim() == 1:
            scale = scale[:, None]
        if tuple(scale.shape) != (out_f, n_groups):
            raise ValueError(
                f"scale must be [{out_f}, {n_groups}] for in_features={in_f}, group_size={gs}; "
                f"got {tuple(scale.shape)}"
            )
        zt = torch.as_tensor(zero).detach().float()
        if zt.dim() == 1 and zt.numel() == out_f:
            zt = zt[:, None]
        zero_const: float | None = None
        zeros: torch.Tensor | None = None
        zero_bits: int | None = None
        if zt.numel() == 1 or bool((zt == zt.reshape(-1)[0]).all()):
            zero_const = float(zt.reshape(-1)[0])
        else:
            if symmetric:
                raise ValueError("symmetric=True needs one zero-point for all groups; got varying zeros")
            if tuple(zt.shape) != (out_f, n_groups):
                raise ValueError(f"zero must be [{out_f}, {n_groups}] or a scalar; got {tuple(zt.shape)}")
            is_int = bool((zt == zt.round()).all()) and float(zt.min()) >= 0 and float(zt.max()) < (1 << bits)
            if is_int:
                zeros, zero_bits = pack_bits(zt.round().to(torch.int64), bits), bits
            else:
                zeros = zt.to(torch.float16)
        p = None
        if perm is not None:
            perm = torch.as_tensor(perm).long().reshape(-1)
            if perm.numel() != in_f or not torch.equal(perm.sort().values, torch.arange(in_f)):
                raise ValueError(f"perm must be a permutation of range({in_f})")
            if not torch.equal(perm, torch.arange(in_f)):
                p = perm.to(torch.int16 if in_f <= 32767 else torch.int32)
        return cls(
            in_f,
            out_f,
            bits,
            -1 if group_size in (-1, 0, None) else gs,
            pack_bits(q, bits),
            scale.to(scale_dtype).contiguous(),
            zeros,
            zero_const,
            zero_bits,
            p,
            _as_bias(bias, torch.float32 if bias is None else bias.dtype),
        )

    def group_index(self) -> torch.Tensor:
        """``g_idx``: the group of every input column."""
        gs = self.effective_group_size
        order = torch.arange(self.in_features, device=self.scales.device) // gs
        if self.perm is None:
            return order
        g = torch.empty(self.in_features, dtype=torch.long, device=order.device)
        g[self.perm.long()] = order
        return g

    def codes(self) -> torch.Tensor:
        """The integer codes ``q`` as ``uint8 [out, in]``."""
        if self._codes_dropped():
            return self._kernel_codes()
        return unpack_bits(self.qweight, self.bits, (self.out_features, self.in_features))

    def zero_points(self) -> torch.Tensor:
        """Zero-points as float ``[out, n_groups]``."""
        if self.zero_const is not None:
            return torch.full((self.out_features, self.n_groups), self.zero_const, device=self.scales.device)
        if self.zeros is None:
            raise ValueError("this layer stores neither a constant zero-point nor zero-point tensors")
        if self.zero_bits is not None:
            return unpack_bits(self.zeros, self.zero_bits, (self.out_features, self.n_groups)).float()
        return self.zeros.float()

    def dequantize(self) -> torch.Tensor:
        g = self.group_index()
        q = self.codes().float()
        s = self.scales.float()[:, g]
        z = self.zero_points()[:, g]
        return (q - z) * s

    def packed_state(self) -> dict[str, torch.Tensor]:
        state = {"qweight": self.qweight, "scales": self.scales}
        for k in ("zeros", "perm", "bias"):
            t = getattr(self, k)
            if t is not None:
                state[k] = t
        return state

    def meta(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bits": self.bits,
            "group_size": self.group_size,
            "zero_const": self.zero_const,
            "zero_bits": self.zero_bits,
            "symmetric": self.zero_const is not None,
        }

    @classmethod
    def from_packed(cls, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> QuantizedLinear:
        return cls(
            meta["in_features"],
            meta["out_features"],
            meta["bits"],
            meta["group_size"],
            state["qweight"],
            state["scales"],
            state.get("zeros"),
            meta.get("zero_const"),
            meta.get("zero_bits"),
            state.get("perm"),
            state.get("bias"),
        )


# ---------------------------------------------------------------------------------------------------
# sparse weights


@register_packed
class SparseLinear(PackedModule):
    """A pruned linear layer stored as its kept values only.

    * ``pattern="unstructured"``: a 1-bit mask per weight (packed) + the non-zero values in row-major
      order: ``1 + (1 - sparsity) * 16`` bits per weight with float16 values.
    * ``pattern="n:m"`` (e.g. ``"2:4"``): in every run of ``m`` consecutive inputs of a row, ``n`` values
      plus their ``ceil(log2 m)``-bit positions: for 2:4 with float16, ``(16 + 2) / 2 = 9`` bits per weight.
      ``in_features`` must be a multiple of ``m``; the weight must have at most ``n`` non-zeros per run.
    """

    packed_type = "sparse_linear"
    # buffers (registered in __init__), declared so the checker knows them as tensors, not submodules
    values: torch.Tensor
    index: torch.Tensor
    bias: torch.Tensor | None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        pattern: str,
        values: torch.Tensor,
        index: torch.Tensor,
        nnz: int,
        bias: torch.Tensor | None,
    ) -> None:
        super().__init__(in_features, out_features)
        self.pattern = pattern
        self.nnz = int(nnz)
        self.register_buffer("values", values)
        self.register_buffer("index", index)  # mask bits (unstructured) or packed positions (n:m)
        self.register_buffer("bias", bias)

    @staticmethod
    def _nm(pattern: str) -> tuple[int, int]:
        n, m = (int(x) for x in pattern.split(":"))
        if not (0 < n < m <= 256):
            raise ValueError(f"N:M pattern {pattern!r} needs 0 < N < M <= 256")
        return n, m

    @classmethod
    def from_dense(
        cls,
        weight: torch.Tensor,
        bias: torch.Tensor | None = None,
        pattern: str = "unstructured",
        value_dtype: torch.dtype = torch.float16,
    ) -> SparseLinear:
        """Store a pruned ``[out, in]`` weight (zeros are the pruned entries)."""
        if weight.dim() != 2:
            raise ValueError(f"weight must be [out, in]; got {tuple(weight.shape)}")
        w = weight.detach().float()
        out_f, in_f = w.shape
        if pattern == "unstructured":
            mask = w != 0
            vals = w[mask].to(value_dtype)
            return cls(
                in_f,
                out_f,
                pattern,
                vals,
                pack_bits(mask.to(torch.uint8), 1),
                int(mask.sum()),
                _as_bias(bias, torch.float32 if bias is None else bias.dtype),
            )
        n, m = cls._nm(pattern)
        if in_f % m:
            raise ValueError(f"{pattern} sparsity needs in_features divisible by {m}; got {in_f}")
        runs = w.reshape(out_f, in_f // m, m)
        nz = (runs != 0).sum(-1)
        if int(nz.max()) > n:
            raise ValueError(f"weight is not {pattern} sparse: a run of {m} has {int(nz.max())} non-zeros")
        # pick the n positions: non-zeros first (stable), padding with zero positions where fewer
        key = (runs != 0).to(torch.int8)
        pos = torch.sort(key, dim=-1, descending=True, stable=True).indices[..., :n]
        pos = torch.sort(pos, dim=-1).values
        vals = torch.gather(runs, -1, pos).to(value_dtype)
        ibits = max(1, math.ceil(math.log2(m)))
        ibits = next(b for b in SUPPORTED_BITS if b >= ibits)
        return cls(
            in_f,
            out_f,
            pattern,
            vals.reshape(-1),
            pack_bits(pos, ibits),
            int((w != 0).sum()),
            _as_bias(bias, torch.float32 if bias is None else bias.dtype),
        )

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nnz / self.n_weights

    def dequantize(self) -> torch.Tensor:
        out_f, in_f = self.out_features, self.in_features
        if self.pattern == "unstructured":
            mask = unpack_bits(self.index, 1, (out_f, in_f)).bool()
            w = torch.zeros(out_f, in_f)
            w[mask] = self.values.float()
            return w
        n, m = self._nm(self.pattern)
        ibits = next(b for b in SUPPORTED_BITS if b >= max(1, math.ceil(math.log2(m))))
        pos = unpack_bits(self.index, ibits, (out_f, in_f // m, n)).long()
        runs = torch.zeros(out_f, in_f // m, m)
        runs.scatter_(-1, pos, self.values.float().reshape(out_f, in_f // m, n))
        return runs.reshape(out_f, in_f)

    def packed_state(self) -> dict[str, torch.Tensor]:
        state = {"values": self.values, "index": self.index}
        if self.bias is not None:
            state["bias"] = self.bias
        return state

    def meta(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "pattern": self.pattern,
            "nnz": self.nnz,
            "value_dtype": _dtype_name(self.values.dtype),
        }

    @classmethod
    def from_packed(cls, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> SparseLinear:
        return cls(
            meta["in_features"],
            meta["out_features"],
            meta["pattern"],
            state["values"],
            state["index"],
            meta["nnz"],
            state.get("bias"),
        )


def packed_modules(model: nn.Module) -> dict[str, PackedModule]:
    """Every packed module of ``model`` by its dotted path."""
    return {name: m for name, m in model.named_modules() if isinstance(m, PackedModule)}
