"""The layer-wise Hessian ``H = 2/n · X Xᵀ`` of the reconstruction loss ``||W X - Ŵ X||²``.

GPTQ, SpQR and SparseGPT all solve the same per-layer problem: keep ``W X`` where ``X`` are the
layer's inputs on calibration text. Its Hessian with respect to a row of ``W`` is ``2 X Xᵀ``; we keep
a running average over the tokens seen so far so it can be accumulated batch by batch from a forward
hook without holding the activations (memory: one ``[in, in]`` float32 matrix per layer).
"""

from __future__ import annotations

import torch


def accumulate_hessian(H: torch.Tensor, n_seen: int, inp: torch.Tensor) -> int:
    """Fold a batch of inputs ``[..., in]`` into ``H`` (in place); returns the new token count.

    ``H`` stays the average of ``2 x xᵀ`` over all ``n_seen`` tokens, so batches of any size mix
    correctly and the result does not depend on how the calibration set was split.
    """
    x = inp.detach().reshape(-1, inp.shape[-1]).to(H.dtype)
    n = x.shape[0]
    if n == 0:
        return n_seen
    total = n_seen + n
    H.mul_(n_seen / total)
    H.addmm_(x.t(), x, alpha=2.0 / total)
    return total


def accumulate_sq_norms(norms: torch.Tensor, n_seen: int, inp: torch.Tensor) -> int:
    """Running mean of ``x_j²`` per input feature (Wanda's ‖X_j‖² up to a constant), in place."""
    x = inp.detach().reshape(-1, inp.shape[-1]).to(norms.dtype)
    n = x.shape[0]
    if n == 0:
        return n_seen
    total = n_seen + n
    norms.mul_(n_seen / total).add_(x.pow(2).sum(0), alpha=1.0 / total)
    return total


def prepare_hessian(H: torch.Tensor, W: torch.Tensor, percdamp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Copy of ``H`` made safe to invert, and the indices of dead inputs.

    A "dead" input never fired on calibration data (``H_jj = 0``): its weights cannot affect the
    output, so they are set to zero in ``W`` (in place) and ``H_jj`` to 1, as in GPTQ. Dampening adds
    ``percdamp`` times the mean diagonal, which keeps the Cholesky factorisation stable.
    """
    H = H.clone().float()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    damp = percdamp * torch.mean(torch.diag(H))
    idx = torch.arange(H.shape[0], device=H.device)
    H[idx, idx] += damp
    return H, dead


def inverse_cholesky_upper(H: torch.Tensor) -> torch.Tensor:
    """Upper Cholesky factor of ``H⁻¹``: its rows give the OBS updates GPTQ applies column by column.

    Retries with growing dampening if ``H`` is not numerically positive definite (tiny layers, very
    few calibration tokens) rather than failing the whole run.
    """
    extra = 0.0
    mean_diag = torch.mean(torch.diag(H)).item()
    idx = torch.arange(H.shape[0], device=H.device)
    for _ in range(6):
        Hd = H.clone()
        if extra:
            Hd[idx, idx] += extra
        L, info = torch.linalg.cholesky_ex(Hd)
        if info.item() == 0:
            Hinv = torch.cholesky_inverse(L)
            U: torch.Tensor
            U, info2 = torch.linalg.cholesky_ex(Hinv, upper=True)
            if info2.item() == 0:
                return U
        extra = (extra * 10) if extra else 0.01 * mean_diag
    raise torch.linalg.LinAlgError(
        "Hessian is not positive definite even after extra dampening; use more calibration data or raise percdamp"
    )
