"""Hessian accumulation is a running average independent of how tokens are batched."""

import torch

from compressors.ops.hessian import (
    accumulate_hessian,
    accumulate_sq_norms,
    inverse_cholesky_upper,
    prepare_hessian,
)


def test_running_hessian_equals_batch_formula_for_any_split():
    torch.manual_seed(0)
    X = torch.randn(3, 50, 8)
    H = torch.zeros(8, 8)
    n = 0
    for b in X:
        n = accumulate_hessian(H, n, b)
    flat = X.reshape(-1, 8)
    assert n == 150
    assert torch.allclose(H, 2 * flat.T @ flat / 150, atol=1e-5)
    norms = torch.zeros(8)
    m = accumulate_sq_norms(norms, 0, X[0])
    accumulate_sq_norms(norms, m, X[1:].reshape(-1, 8))
    assert torch.allclose(norms, (X.reshape(-1, 8) ** 2).mean(0), atol=1e-5)


def test_dead_inputs_zeroed_and_inverse_factor_is_upper_cholesky_of_inverse():
    torch.manual_seed(0)
    X = torch.randn(100, 6)
    X[:, 2] = 0
    H = 2 * X.T @ X / 100
    W = torch.ones(4, 6)
    Hd, dead = prepare_hessian(H, W, 0.01)
    assert dead.tolist() == [False, False, True, False, False, False]
    assert torch.all(W[:, 2] == 0)
    U = inverse_cholesky_upper(Hd)
    assert torch.allclose(U, torch.triu(U))
    assert torch.allclose(U.T @ U, torch.linalg.inv(Hd), atol=1e-4)
