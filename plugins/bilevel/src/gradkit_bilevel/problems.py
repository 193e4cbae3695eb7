"""Problems shipped with the plugin (all float64, generated or from scikit-image's bundled images).

* :class:`QuadraticBilevel` — the official ``Quadratic.py`` experiment: ``h(x, θ) = ½‖A₂x + A₃θ − b₂‖²``,
  ``g(x) = ½‖A₁x − b₁‖²``, ``A_i ∈ R^{n×m}`` uniform, n = 1000, m = 10.  Closed forms for x̂(θ), ∇f(θ), θ*.
* :class:`TVDenoising` — learn ``θ = (log α, log ν)`` of the smoothed-TV denoiser
  ``h(x, θ) = ½‖x − y‖² + ½e^{θ₀} Σ √(|∇x|² + e^{2θ₁})``; upper level ``g(x) = ‖x − x_clean‖²/(2K)``
  (K images: the squared error summed over pixels, averaged over images).
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from .core import BilevelProblem

D = torch.float64


class QuadraticBilevel(BilevelProblem):
    """Quadratic bilevel problem with an analytic optimum (``Quadratic.py`` of the official code)."""

    def __init__(self, A1, A2, A3, b1, b2, theta0=None, x0=None):
        self.A1, self.A2, self.A3 = (torch.as_tensor(a, dtype=D) for a in (A1, A2, A3))
        self.b1, self.b2 = torch.as_tensor(b1, dtype=D), torch.as_tensor(b2, dtype=D)
        n, m = self.A2.shape
        if self.A1.shape != (n, m) or self.A3.shape[0] != n or self.b1.shape != (n,) or self.b2.shape != (n,):
            raise ValueError(f"shapes must be A1, A2: (n, m), A3: (n, p), b1, b2: (n,); got {tuple(self.A1.shape)}, "
                             f"{tuple(self.A2.shape)}, {tuple(self.A3.shape)}, {tuple(self.b1.shape)}, "
                             f"{tuple(self.b2.shape)}")
        H = self.A2.T @ self.A2
        ev = torch.linalg.eigvalsh(H)
        if float(ev[0]) <= 0:
            raise ValueError("A2 must have full column rank (the lower level must be strongly convex)")
        self.H = H
        # x̂(θ) = x_c − M θ
        self.M = torch.linalg.solve(H, self.A2.T @ self.A3)
        self.x_c = torch.linalg.solve(H, self.A2.T @ self.b2)
        # f(θ) = ½‖A1 (x_c − Mθ) − b1‖² = ½‖Gθ − r‖²,  G = −A1 M,  r = b1 − A1 x_c
        self.G = -self.A1 @ self.M
        self.r = self.b1 - self.A1 @ self.x_c
        self.theta_star = torch.linalg.lstsq(self.G, self.r.unsqueeze(1)).solution.squeeze(1)
        self.f_star = 0.5 * float(torch.linalg.vector_norm(self.G @ self.theta_star - self.r) ** 2)
        self.Lf = float(torch.linalg.eigvalsh(self.G.T @ self.G)[-1])      # smoothness of f
        self.B_norm = float(torch.linalg.matrix_norm(self.A2.T @ self.A3, ord=2))   # ‖∂²_{θx}h‖
        p = self.A3.shape[1]
        super().__init__(self._lower, self._upper,
                         torch.ones(p, dtype=D) if theta0 is None else theta0,
                         torch.zeros(m, dtype=D) if x0 is None else x0,
                         mu=float(ev[0]), L=float(ev[-1]), Lg=float(torch.linalg.eigvalsh(self.A1.T @ self.A1)[-1]),
                         name="quadratic")

    @classmethod
    def random(cls, n: int = 1000, m: int = 10, seed: int = 0, noise: float = 0.01, centered: bool = False):
        """The official generator (``A_i ~ U[0, 1]``, ``b₁ = A₁x₁ + noise``, ``b₂ = A₂x₂ + A₃θ_e + noise``).

        ``centered=True`` draws ``A_i ~ U[−½, ½]`` instead: the official matrices share a large mean
        component that makes f badly conditioned (κ(∇²f) ≈ 1.6e5 at n = 1000, m = 10, seed 0), so that no
        first-order method reaches θ* within a CPU budget; the centred problem has κ ≈ 3e2.
        """
        if n < m or m < 1:
            raise ValueError(f"need n >= m >= 1, got n={n}, m={m}")
        gen = torch.Generator().manual_seed(int(seed))
        shift = 0.5 if centered else 0.0
        A1, A2, A3 = (torch.rand(n, m, generator=gen, dtype=D) - shift for _ in range(3))
        x1, x2, th = (torch.rand(m, generator=gen, dtype=D) for _ in range(3))
        b1 = A1 @ x1 + noise * torch.randn(n, generator=gen, dtype=D)
        b2 = A2 @ x2 + A3 @ th + noise * torch.randn(n, generator=gen, dtype=D)
        return cls(A1, A2, A3, b1, b2)

    def _lower(self, x, theta):
        return 0.5 * torch.sum((self.A2 @ x + self.A3 @ theta - self.b2) ** 2)

    def _upper(self, x):
        return 0.5 * torch.sum((self.A1 @ x - self.b1) ** 2)

    def x_hat(self, theta):
        return self.x_c - self.M @ theta

    def f(self, theta) -> float:
        return float(self.upper(self.x_hat(theta)))

    def hypergradient(self, theta):
        """Exact ∇f(θ) = −(A₂ᵀA₃)ᵀ(A₂ᵀA₂)⁻¹A₁ᵀ(A₁x̂ − b₁)."""
        return self.G.T @ (self.G @ theta - self.r)

    def value(self, theta, tol: float = 0.0) -> float:
        return self.f(theta)


def _grad2d(x):
    """Forward differences with Neumann boundary: x (..., H, W) -> (dx, dy)."""
    dx = torch.zeros_like(x)
    dy = torch.zeros_like(x)
    dx[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    dy[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    return dx, dy


def _psnr(x, clean):
    mse = float(torch.mean((x - clean) ** 2))
    return 10 * math.log10(1.0 / max(mse, 1e-300))


class TVDenoising(BilevelProblem):
    """Learn ``θ = (log α, log ν)`` of smoothed-TV denoising from clean/noisy pairs (pixel values in [0, 1]).

    ``μ = 1`` (data term) and ``L(θ) = 1 + 4e^{θ₀}/e^{θ₁}`` (``‖∇‖² ≤ 8``, ``‖∇²√(|·|²+ν²)‖ ≤ 1/ν``);
    the upper level ``‖x − x_clean‖²/(2K)`` (K images) has ``L_g = 1/K``.  The absolute accuracies ε, δ
    refer to this scale (a per-pixel mean would shrink ∇g by the pixel count and make ε₀ = 0.1 vacuous).
    """

    def __init__(self, clean: torch.Tensor, noisy: torch.Tensor, theta0=None):
        clean, noisy = torch.as_tensor(clean, dtype=D), torch.as_tensor(noisy, dtype=D)
        if clean.shape != noisy.shape or clean.dim() < 2:
            raise ValueError(f"clean and noisy must have the same shape (..., H, W), got {tuple(clean.shape)} "
                             f"and {tuple(noisy.shape)}")
        self.clean, self.noisy = clean, noisy
        self.N = clean.numel()
        self.K = clean.numel() // (clean.shape[-1] * clean.shape[-2])
        theta0 = torch.tensor([math.log(0.01), math.log(0.1)], dtype=D) if theta0 is None else theta0
        super().__init__(self._lower, self._upper, theta0, noisy.clone(), mu=1.0, L=self._L, Lg=1.0 / self.K,
                         name="tv-denoising")

    @classmethod
    def from_skimage(cls, size: int = 64, sigma: float = 0.1, seed: int = 0,
                     names=("camera", "astronaut", "coins", "moon"), downsample: int = 1, theta0=None):
        """Crops of scikit-image's bundled test images (no download) with Gaussian noise σ."""
        import numpy as np
        import skimage.color
        import skimage.data

        if size < 4:
            raise ValueError(f"size must be >= 4, got {size}")
        imgs = []
        for nm in names:
            im = getattr(skimage.data, nm)()
            if im.ndim == 3:
                im = skimage.color.rgb2gray(im)
            im = np.asarray(im, dtype=np.float64)
            if im.max() > 1.0:
                im = im / 255.0
            s = size * downsample
            h0, w0 = (im.shape[0] - s) // 2, (im.shape[1] - s) // 2
            crop = im[h0:h0 + s, w0:w0 + s]
            if downsample > 1:
                crop = crop.reshape(size, downsample, size, downsample).mean(axis=(1, 3))
            imgs.append(crop)
        clean = torch.tensor(np.stack(imgs), dtype=D)
        gen = torch.Generator().manual_seed(int(seed))
        noisy = clean + sigma * torch.randn(clean.shape, generator=gen, dtype=D)
        return cls(clean, noisy, theta0=theta0)

    def _L(self, theta) -> float:
        return 1.0 + 4.0 * math.exp(float(theta[0])) / math.exp(float(theta[1]))

    def _lower(self, x, theta):
        dx, dy = _grad2d(x)
        tv = torch.sum(torch.sqrt(dx ** 2 + dy ** 2 + torch.exp(2 * theta[1])))
        return 0.5 * torch.sum((x - self.noisy) ** 2) + 0.5 * torch.exp(theta[0]) * tv

    def _upper(self, x):
        return 0.5 * torch.sum((x - self.clean) ** 2) / self.K

    def psnr(self, x) -> float:
        return _psnr(x, self.clean)


class MultinomialLogisticHyper(BilevelProblem):
    """Per-feature ℓ2 hyperparameters of multinomial logistic regression (the paper's third experiment).

    ``h(W, θ) = (1/n) Σ_i CE(x_iᵀW, y_i) + ½ Σ_j e^{θ_j} ‖W_j‖²`` (W: features × classes, one θ_j per feature
    row), ``g(W) = (1/n_v) Σ_i CE(x_iᵀW, y_i)`` on the validation split.  μ = min_j e^{θ_j};
    ``L = λ_max(XᵀX)/n + max_j e^{θ_j}`` (the softmax cross-entropy Hessian is ≼ I per sample);
    ``L_g = λ_max(X_vᵀX_v)/n_v``.
    """

    def __init__(self, X, y, Xv, yv, n_classes: int, theta0=None):
        self.X, self.Xv = torch.as_tensor(X, dtype=D), torch.as_tensor(Xv, dtype=D)
        self.y, self.yv = torch.as_tensor(y, dtype=torch.long), torch.as_tensor(yv, dtype=torch.long)
        if self.X.dim() != 2 or self.Xv.dim() != 2 or self.X.shape[1] != self.Xv.shape[1]:
            raise ValueError(f"X and Xv must be 2-D with the same number of features, got {tuple(self.X.shape)} "
                             f"and {tuple(self.Xv.shape)}")
        if self.y.shape != (self.X.shape[0],) or self.yv.shape != (self.Xv.shape[0],):
            raise ValueError("y and yv must be 1-D label vectors matching the rows of X and Xv")
        if int(n_classes) < 2 or int(self.y.max()) >= int(n_classes) or int(self.yv.max()) >= int(n_classes):
            raise ValueError(f"labels must lie in [0, n_classes) with n_classes >= 2, got n_classes={n_classes}")
        self.k = int(n_classes)
        d = self.X.shape[1]
        self._lx = float(torch.linalg.eigvalsh(self.X.T @ self.X)[-1]) / self.X.shape[0]
        lg = float(torch.linalg.eigvalsh(self.Xv.T @ self.Xv)[-1]) / self.Xv.shape[0]
        theta0 = torch.zeros(d, dtype=D) if theta0 is None else theta0
        super().__init__(self._lower, self._upper, theta0, torch.zeros(d, self.k, dtype=D),
                         mu=lambda th: math.exp(float(th.min())),
                         L=lambda th: self._lx + math.exp(float(th.max())), Lg=lg, name="multinomial-logistic")

    @classmethod
    def digits(cls, n_train: int = 300, n_val: int = 300, seed: int = 0, theta0=None):
        """scikit-learn's bundled digits (8×8 → 64 features scaled to [0, 1]), a seeded train/validation split."""
        from sklearn.datasets import load_digits

        Xa, ya = load_digits(return_X_y=True)
        gen = torch.Generator().manual_seed(int(seed))
        perm = torch.randperm(len(ya), generator=gen)
        if n_train + n_val > len(ya):
            raise ValueError(f"n_train + n_val must be <= {len(ya)}, got {n_train + n_val}")
        X = torch.tensor(Xa, dtype=D)[perm] / 16.0
        y = torch.tensor(ya)[perm]
        return cls(X[:n_train], y[:n_train], X[n_train:n_train + n_val], y[n_train:n_train + n_val], 10,
                   theta0=theta0)

    def _lower(self, W, theta):
        ce = torch.nn.functional.cross_entropy(self.X @ W, self.y)
        return ce + 0.5 * torch.sum(torch.exp(theta)[:, None] * W ** 2)

    def _upper(self, W):
        return torch.nn.functional.cross_entropy(self.Xv @ W, self.yv)

    def accuracy(self, W) -> float:
        return float(((self.Xv @ W).argmax(1) == self.yv).double().mean())
