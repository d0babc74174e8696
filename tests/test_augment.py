import pytest
import torch

from lens import augment
from lens.augment import AugmentConfig
from lens.errors import LensError

# the CUDA cases run where a GPU is present; CI has none and runs the CPU cases
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _batch(n: int = 16, c: int = 2, size: int = 9, seed: int = 0) -> torch.Tensor:
    # distinct pixel values so that any permutation is identifiable
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n * c * size * size, generator=g).float().view(n, c, size, size)


def _d4(img: torch.Tensor) -> list[torch.Tensor]:
    """The 8 dihedral images of one (C, H, W) image, written with torch.rot90/flip."""
    out = []
    for t in range(8):
        g = torch.flip(img, dims=(-1,)) if t >= 4 else img
        out.append(torch.rot90(g, t % 4, dims=(-2, -1)))
    return out


def test_dihedral_batch_matches_reference_elements():
    x = _batch(8)
    y = augment.dihedral_batch(x, torch.arange(8))
    for i in range(8):
        assert torch.equal(y[i], _d4(x[i])[i])


def test_random_dihedral_is_exact_and_covers_all_elements():
    x = _batch(64, c=1, size=5)
    y = augment.random_dihedral(x, torch.Generator().manual_seed(1))
    assert y.shape == x.shape and y.dtype == x.dtype
    seen = set()
    for i in range(len(x)):
        assert torch.equal(torch.sort(y[i].flatten()).values, torch.sort(x[i].flatten()).values)
        matches = [t for t, ref in enumerate(_d4(x[i])) if torch.equal(y[i], ref)]
        assert len(matches) == 1  # the image is exactly one D4 element of its source
        seen.add(matches[0])
    assert seen == set(range(8))


def test_random_dihedral_is_independent_per_image():
    x = _batch(1, size=6).expand(32, -1, -1, -1).contiguous()
    y = augment.random_dihedral(x, torch.Generator().manual_seed(0))
    distinct = {tuple(img.flatten().tolist()) for img in y}
    assert len(distinct) > 4


def test_rot90_batch_matches_torch_and_k4_is_identity():
    x = _batch(4)
    k = torch.tensor([0, 1, 2, 3])
    y = augment.rot90_batch(x, k)
    for i in range(4):
        assert torch.equal(y[i], torch.rot90(x[i], i, dims=(-2, -1)))
    assert torch.equal(augment.rot90_batch(x, torch.full((4,), 4)), x)
    assert torch.equal(augment.rot90_batch(augment.rot90_batch(x, k), 4 - k), x)


def test_rotations_reject_non_square_and_non_batches():
    with pytest.raises(LensError, match="square"):
        augment.random_dihedral(torch.zeros(2, 1, 4, 5))
    with pytest.raises(LensError, match="N, C, H, W"):
        augment.random_dihedral(torch.zeros(1, 4, 4))


def test_random_shift_translates_with_zero_fill():
    x = _batch(32, c=1, size=7) + 1  # strictly positive, so zero marks padding
    y = augment.random_shift(x, 2, torch.Generator().manual_seed(3))
    shifts = set()
    for i in range(len(x)):
        found = None
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                ref = torch.zeros_like(x[i])
                src = x[i][:, max(0, dy): 7 + min(0, dy), max(0, dx): 7 + min(0, dx)]
                ref[:, max(0, -dy): 7 + min(0, -dy), max(0, -dx): 7 + min(0, -dx)] = src
                if torch.equal(y[i], ref):
                    found = (dy, dx)
        assert found is not None
        shifts.add(found)
    assert len(shifts) > 5


def test_random_shift_reflect_keeps_values_and_zero_is_identity():
    x = _batch(4, size=6)
    y = augment.random_shift(x, 2, torch.Generator().manual_seed(0), mode="reflect")
    assert y.shape == x.shape
    assert set(y.flatten().tolist()) <= set(x.flatten().tolist())
    assert torch.equal(augment.random_shift(x, 0), x)
    with pytest.raises(LensError, match="max_shift"):
        augment.random_shift(x, -1)


def test_gaussian_noise_statistics_and_determinism():
    x = torch.zeros(8, 1, 32, 32)
    y = augment.gaussian_noise(x, 0.1, torch.Generator().manual_seed(0))
    assert abs(y.std().item() - 0.1) < 0.005 and abs(y.mean().item()) < 0.005
    z = augment.gaussian_noise(x, 0.1, torch.Generator().manual_seed(0))
    assert torch.equal(y, z)
    assert torch.equal(augment.gaussian_noise(x, 0.0), x)


def test_brightness_contrast_per_image_ranges():
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0)) + 0.5
    y = augment.random_brightness_contrast(x, 0.2, 0.3, torch.Generator().manual_seed(1))
    b = y.mean(dim=(1, 2, 3)) / x.mean(dim=(1, 2, 3))  # contrast keeps the mean
    assert ((b > 0.8 - 1e-5) & (b < 1.2 + 1e-5)).all() and b.std() > 0.02
    c = y.std(dim=(1, 2, 3)) / (x.std(dim=(1, 2, 3)) * b)
    assert ((c > 0.7 - 1e-4) & (c < 1.3 + 1e-4)).all() and c.std() > 0.02
    with pytest.raises(LensError, match="contrast"):
        augment.random_brightness_contrast(x, 0.1, 1.5)


def test_gaussian_blur_preserves_flux_and_smooths():
    x = torch.zeros(1, 1, 21, 21)
    x[0, 0, 10, 10] = 1.0
    y = augment.gaussian_blur(x, 1.0)
    assert y.shape == x.shape
    assert abs(y.sum().item() - 1.0) < 1e-5
    assert y.max() < 0.2 and y[0, 0, 10, 10] == y.max()
    assert torch.allclose(y[0, 0, 10, 9], y[0, 0, 9, 10])  # isotropic
    const = torch.full((2, 3, 8, 8), 0.7)
    assert torch.allclose(augment.gaussian_blur(const, 2.0), const)


@pytest.mark.parametrize("device", DEVICES)
def test_apply_is_deterministic_keeps_shape_device_dtype(device):
    cfg = AugmentConfig(dihedral=True, max_shift=2, noise_sigma=0.05, brightness=0.1,
                        contrast=0.1)
    x = torch.rand(6, 3, 16, 16, device=device).to(memory_format=torch.channels_last)

    def gen(seed: int) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(seed)

    a = augment.apply(x, cfg, gen(7))
    b = augment.apply(x, cfg, gen(7))
    c = augment.apply(x, cfg, gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.device == x.device and a.dtype == x.dtype
    half = augment.apply(x.to(torch.bfloat16), cfg, gen(7))
    assert half.dtype == torch.bfloat16 and half.device == x.device


@pytest.mark.parametrize("device", DEVICES)
def test_a_cpu_generator_gives_the_same_images_on_every_device(device):
    cfg = AugmentConfig(dihedral=True, max_shift=3)
    x = _batch(16, size=12)
    on_cpu = augment.apply(x, cfg, torch.Generator().manual_seed(3))
    on_device = augment.apply(x.to(device), cfg, torch.Generator().manual_seed(3))
    assert on_device.device.type == device
    assert torch.equal(on_device.cpu(), on_cpu)


def test_apply_with_nothing_on_is_identity():
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(augment.apply(x, AugmentConfig(dihedral=False)), x)


def test_augment_config_validation():
    assert AugmentConfig.from_dict({"max_shift": 3}).max_shift == 3
    with pytest.raises(LensError, match="valid keys: dihedral=True, max_shift=0"):
        AugmentConfig.from_dict({"rotate": 10})
    with pytest.raises(LensError, match="noise_sigma"):
        AugmentConfig(noise_sigma=-1)
    with pytest.raises(LensError, match="max_shift"):
        AugmentConfig(max_shift=1.5)
    with pytest.raises(LensError, match="brightness"):
        AugmentConfig(brightness=1.0)
