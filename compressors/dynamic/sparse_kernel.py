"""A sparse matrix-vector product for one token whose small activations are skipped (TEAL's decode kernel).

``y = W[:, idx] @ x[idx]`` with ``idx = {i : |x_i| > t}``. With the weight stored transposed and
row-major (``Wt = W.T``, ``[in, out]``), column ``i`` of ``W`` is the contiguous row ``Wt[i]``, so the
product is a sum of the kept rows scaled by ``x_i`` and only the kept rows are read from memory. At
batch 1 a matrix-vector product is memory-bound, so reading half the rows is where the speed-up comes
from.

Measured on this project's 2-core CPU (1 thread, float32): gathering the kept rows with torch
(``x[idx] @ Wt.index_select(0, idx)``) is *slower* than the dense product at 25-50 % sparsity (the
gather copies the rows, then the product reads them again), so the real kernel is a small C++ loop
compiled on first use with ``torch.utils.cpp_extension.load_inline`` (about 45 s once, then cached in
torch's extension folder). Where no compiler is available, :func:`load_kernel` returns ``None`` and
callers fall back to the masked dense product (exact, no speed-up).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import torch

log = logging.getLogger(__name__)

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <vector>

// y[o] = sum over i with |x[i]| > t of x[i] * wt[i][o]; wt is [in, out] row-major (W transposed).
torch::Tensor sparse_rows_matvec(torch::Tensor x, torch::Tensor wt, double threshold) {
  TORCH_CHECK(x.scalar_type() == torch::kFloat32 && wt.scalar_type() == torch::kFloat32,
              "sparse_rows_matvec: float32 tensors only");
  TORCH_CHECK(x.is_contiguous() && wt.is_contiguous() && wt.dim() == 2 && x.numel() == wt.size(0),
              "sparse_rows_matvec: x must be contiguous [in] and wt contiguous [in, out]");
  const int64_t in = wt.size(0), out = wt.size(1);
  const float* xp = x.data_ptr<float>();
  const float* wp = wt.data_ptr<float>();
  const float t = static_cast<float>(threshold);
  std::vector<int64_t> idx;
  idx.reserve(in);
  for (int64_t i = 0; i < in; ++i) if (std::fabs(xp[i]) > t) idx.push_back(i);
  auto y = torch::zeros({out}, x.options());
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, out, 512, [&](int64_t b, int64_t e) {
    size_t k = 0;
    for (; k + 4 <= idx.size(); k += 4) {  // four rows per pass: fewer loads and stores of y
      const float x0 = xp[idx[k]], x1 = xp[idx[k + 1]], x2 = xp[idx[k + 2]], x3 = xp[idx[k + 3]];
      const float* r0 = wp + idx[k] * out;
      const float* r1 = wp + idx[k + 1] * out;
      const float* r2 = wp + idx[k + 2] * out;
      const float* r3 = wp + idx[k + 3] * out;
      for (int64_t o = b; o < e; ++o) yp[o] += x0 * r0[o] + x1 * r1[o] + x2 * r2[o] + x3 * r3[o];
    }
    for (; k < idx.size(); ++k) {
      const float xi = xp[idx[k]];
      const float* r = wp + idx[k] * out;
      for (int64_t o = b; o < e; ++o) yp[o] += xi * r[o];
    }
  });
  return y;
}
"""

_lock = threading.Lock()
_kernel: Any = None
_tried = False


def load_kernel() -> Any | None:
    """The compiled kernel module (built once, then cached by torch), or ``None`` with a logged reason."""
    global _kernel, _tried
    with _lock:
        if not _tried:
            _tried = True
            try:
                from torch.utils.cpp_extension import load_inline

                _kernel = load_inline(
                    "shrinkwise_teal_matvec",
                    cpp_sources=_SOURCE,
                    functions=["sparse_rows_matvec"],
                    extra_cflags=["-O3", "-march=native"],
                    verbose=False,
                )
            except Exception as exc:  # no compiler, no headers, ...: fall back to masked dense
                log.warning(
                    "TEAL sparse kernel unavailable (%s); decoding uses the masked dense product", exc
                )
                _kernel = None
        return _kernel


def sparse_matvec_torch(x: torch.Tensor, wt: torch.Tensor, threshold: float) -> torch.Tensor:
    """The same product with torch ops (gather the kept rows, then multiply): exact, used as reference."""
    idx = (x.abs() > threshold).nonzero().squeeze(1)
    return x.index_select(0, idx) @ wt.index_select(0, idx)
