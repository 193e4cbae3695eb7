import pytest
import torch

torch.set_num_threads(1)  # small problems; avoid thread contention on the shared 2-core machine


@pytest.fixture(scope="session")
def quad():
    from gradkit_bilevel.problems import QuadraticBilevel

    return QuadraticBilevel.random(n=200, m=5, seed=6, centered=True)   # kappa(f) = 29


@pytest.fixture(scope="session")
def quad_official():
    from gradkit_bilevel.problems import QuadraticBilevel

    return QuadraticBilevel.random(n=1000, m=10, seed=0)


@pytest.fixture(scope="session")
def tv():
    from gradkit_bilevel.problems import TVDenoising

    gen = torch.Generator().manual_seed(0)
    clean = torch.zeros(2, 12, 12, dtype=torch.float64)
    clean[0, 3:9, 2:7] = 1.0
    clean[1, :, 6:] = 0.6
    clean[1, 2:5, 1:4] = 0.3
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=gen, dtype=torch.float64)
    return TVDenoising(clean, noisy, theta0=torch.tensor([-2.0, -2.5], dtype=torch.float64))


@pytest.fixture(scope="session")
def tv_images():
    from gradkit_bilevel.problems import TVDenoising

    return TVDenoising.from_skimage(size=16, downsample=4, names=("camera", "moon"), seed=0)
