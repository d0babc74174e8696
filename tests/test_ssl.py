import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from lens.errors import LensError
from lens.ssl import METHODS, build_method
from lens.ssl.byol import BYOL
from lens.ssl.ntxent import nt_xent
from lens.ssl.rotation import Rotation

torch.set_num_threads(2)

SIZE = 16
# the CUDA cases run where a GPU is present; CI has none and runs the CPU cases
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


class TinyBackbone(nn.Module):
    """Orientation-sensitive (no global pooling) and fast: (N, 1, 16, 16) -> (N, 32)."""

    feature_dim = 32

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(8 * (SIZE // 4) ** 2, self.feature_dim),
        )

    def forward(self, x):
        return self.net(x)


def blobs(n: int = 16, seed: int = 0) -> torch.Tensor:
    """Images of two off-centre Gaussian blobs: no rotation symmetry, values in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    images = torch.zeros(n, 1, SIZE, SIZE)
    for _ in range(2):
        cy, cx = (torch.rand(2, n, 1, 1, generator=g) * (SIZE - 4) + 2).unbind(0)
        width = 1 + 2 * torch.rand(n, 1, 1, generator=g)
        images[:, 0] += torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * width**2))
    return images / images.amax(dim=(1, 2, 3), keepdim=True)


def reference_nt_xent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    """NT-Xent written out over every anchor and every pair, in float64."""
    z = torch.cat([z1, z2]).double()
    n2 = len(z)
    total = 0.0
    for a in range(n2):
        positive = (a + n2 // 2) % n2

        def sim(k, a=a):
            return (z[a] @ z[k] / (z[a].norm() * z[k].norm())).item() / t

        denominator = sum(math.exp(sim(k)) for k in range(n2) if k != a)
        total += -math.log(math.exp(sim(positive)) / denominator)
    return total / n2


def make(name: str, **params) -> nn.Module:
    torch.manual_seed(0)
    return build_method(name, TinyBackbone(), TinyBackbone.feature_dim, params)


# ---------------------------------------------------------------- NT-Xent


@pytest.mark.parametrize("t", [0.1, 0.5, 1.0])
def test_nt_xent_matches_reference(t):
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    assert nt_xent(z1, z2, t).item() == pytest.approx(reference_nt_xent(z1, z2, t), rel=1e-5)


def test_nt_xent_is_low_for_aligned_views_and_checks_input():
    z = torch.randn(8, 16)
    assert nt_xent(z, z, 0.1) < nt_xent(z, torch.randn(8, 16), 0.1)
    with pytest.raises(LensError, match="temperature"):
        nt_xent(z, z, 0.0)
    with pytest.raises(LensError, match="shape"):
        nt_xent(z, z[:4], 0.5)


@pytest.mark.parametrize("device", DEVICES)
def test_nt_xent_under_autocast_stays_float32(device):
    z1, z2 = torch.randn(4, 8), torch.randn(4, 8)
    with torch.autocast(device, dtype=torch.bfloat16):
        loss = nt_xent(z1.to(device).bfloat16(), z2.to(device).bfloat16(), 0.5)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(nt_xent(z1, z2, 0.5).item(), rel=2e-2)


def _ddp_worker(rank: int, world: int, tmp: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank,
                            world_size=world)
    try:
        g = torch.Generator().manual_seed(3)
        z1 = torch.randn(8, 4, generator=g, requires_grad=True)
        z2 = torch.randn(8, 4, generator=g, requires_grad=True)
        shard = slice(rank * 4, rank * 4 + 4)
        loss = nt_xent(z1[shard], z2[shard], 0.3)
        loss.backward()
        # what DDP does to gradients: average them over the ranks
        packed = torch.cat([loss.detach().view(1), z1.grad.flatten(), z2.grad.flatten()])
        dist.all_reduce(packed)
        if rank == 0:
            torch.save(packed / world, f"{tmp}/packed.pt")
        dist.barrier()  # nobody tears gloo down while another rank still talks
    finally:
        dist.destroy_process_group()


def test_nt_xent_gathers_negatives_across_ranks(tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path)), nprocs=2)
    packed = torch.load(tmp_path / "packed.pt")
    g = torch.Generator().manual_seed(3)
    z1 = torch.randn(8, 4, generator=g, requires_grad=True)
    z2 = torch.randn(8, 4, generator=g, requires_grad=True)
    loss = nt_xent(z1, z2, 0.3)  # the whole batch on one process
    loss.backward()
    expected = torch.cat([loss.detach().view(1), z1.grad.flatten(), z2.grad.flatten()])
    torch.testing.assert_close(packed, expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- rotation


def test_rotation_loss_matches_cross_entropy_on_hand_built_batch():
    method = make("rotation")
    x = blobs(5)
    images = torch.stack([torch.rot90(x[i], k, dims=(-2, -1)) for k in range(4) for i in range(5)])
    labels = torch.tensor([k for k in range(4) for _ in range(5)])
    expected = F.cross_entropy(method.head(method.backbone(images)), labels)
    assert method(x).item() == pytest.approx(expected.item(), rel=1e-6)


def test_rotation_one_random_k_per_image():
    method = make("rotation", all_rotations=False)
    x = blobs(32)
    images, k = method.rotated(x, torch.Generator().manual_seed(0))
    assert images.shape == x.shape and set(k.tolist()) == {0, 1, 2, 3}
    for i in range(len(x)):
        assert torch.equal(images[i], torch.rot90(x[i], int(k[i]), dims=(-2, -1)))
    g = torch.Generator().manual_seed(0)
    expected = F.cross_entropy(method.head(method.backbone(images)), k)
    assert method(x, g).item() == pytest.approx(expected.item(), rel=1e-6)


# ---------------------------------------------------------------- contrastive


def test_rotation_contrastive_views_and_loss():
    method = make("rotation_contrastive", temperature=0.3)
    x = blobs(12)
    v1, v2 = method.views(x, torch.Generator().manual_seed(5))
    assert torch.equal(v1, x)
    ks = []
    for i in range(len(x)):
        ks += [k for k in range(4) if torch.equal(v2[i], torch.rot90(x[i], k, dims=(-2, -1)))]
    assert len(ks) == len(x) and set(ks) == {1, 2, 3}
    expected = reference_nt_xent(method.embed(v1), method.embed(v2), 0.3)
    got = method(x, torch.Generator().manual_seed(5)).item()
    assert got == pytest.approx(expected, rel=1e-5)
    assert method.projector[0].out_features == 128 and method.projector[-1].out_features == 4


def test_noise_contrastive_views_and_loss():
    method = make("noise_contrastive", sigma=0.2)
    x = blobs(12)
    v1, v2 = method.views(x, torch.Generator().manual_seed(5))
    assert torch.equal(v1, x)
    assert (v2 - x).std().item() == pytest.approx(0.2, rel=0.1)
    expected = reference_nt_xent(method.embed(v1), method.embed(v2), 0.5)
    got = method(x, torch.Generator().manual_seed(5)).item()
    assert got == pytest.approx(expected, rel=1e-5)


def test_simclr_views_and_loss():
    method = make("simclr", temperature=0.1)
    x = blobs(12)
    v1, v2 = method.views(x, torch.Generator().manual_seed(5))
    assert v1.shape == v2.shape == x.shape and not torch.equal(v1, v2)
    expected = reference_nt_xent(method.embed(v1), method.embed(v2), 0.1)
    got = method(x, torch.Generator().manual_seed(5)).item()
    assert got == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------- BYOL


def test_byol_loss_is_symmetric_two_minus_two_cos():
    method = make("byol", hidden_dim=64, out_dim=16)
    x = blobs(10)
    v1, v2 = method.views(x, torch.Generator().manual_seed(2))
    p1, p2 = method.online(v1), method.online(v2)
    t1, t2 = method.target(v1), method.target(v2)

    def two_minus_two_cos(p, t):
        cos = (p * t).sum(1) / (p.norm(dim=1) * t.norm(dim=1))
        return (2 - 2 * cos).mean().item()

    expected = two_minus_two_cos(p1, t2) + two_minus_two_cos(p2, t1)
    got = method(x, torch.Generator().manual_seed(2)).item()
    assert got == pytest.approx(expected, rel=1e-5)
    assert 0 <= got <= 8


def test_byol_target_moves_only_by_ema():
    method = make("byol", hidden_dim=64, out_dim=16, momentum=0.9)
    opt = torch.optim.SGD(method.parameters(), lr=0.5)
    before = [p.detach().clone() for p in method.target_backbone.parameters()]
    loss = method(blobs(8), torch.Generator().manual_seed(0))
    opt.zero_grad()
    loss.backward()
    assert all(p.grad is None for p in method.target_backbone.parameters())
    assert all(p.grad is None for p in method.target_projector.parameters())
    opt.step()
    for p, b in zip(method.target_backbone.parameters(), before, strict=True):
        assert torch.equal(p, b)  # the optimizer step left the target alone
    online = [p.detach().clone() for p in method.backbone.parameters()]
    assert any(not torch.equal(o, b) for o, b in zip(online, before, strict=True))
    method.after_step()
    for p, b, o in zip(method.target_backbone.parameters(), before, online, strict=True):
        torch.testing.assert_close(p, 0.9 * b + 0.1 * o)
    assert int(method.step) == 1


def test_byol_cosine_momentum_schedule():
    method = make("byol", hidden_dim=8, out_dim=4, momentum=0.9, total_steps=10)
    assert method.momentum() == pytest.approx(0.9)
    method.step.fill_(5)
    assert method.momentum() == pytest.approx(0.95)
    method.step.fill_(20)
    assert method.momentum() == pytest.approx(1.0)
    assert "step" in method.state_dict()  # the schedule survives a checkpoint
    assert make("byol", hidden_dim=8, out_dim=4).momentum() == 0.99


# ---------------------------------------------------------------- learning and API


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_method_learns_on_a_tiny_batch(name):
    method = make(name)
    x = blobs(16)
    opt = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=3e-3)

    def evaluate() -> float:
        with torch.no_grad():
            return method(x, torch.Generator().manual_seed(123)).item()

    start = evaluate()
    for step in range(40):
        loss = method(x, torch.Generator().manual_seed(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.after_step()
    assert evaluate() < 0.9 * start


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_method_trains_channels_last_under_autocast(name, device):
    """As the training loop runs it: bf16 autocast, channels_last, a device generator."""
    method = make(name).to(device, memory_format=torch.channels_last)
    x = blobs(8).to(device, memory_format=torch.channels_last)
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.01)
    with torch.autocast(device, dtype=torch.bfloat16):
        loss = method(x, torch.Generator(device=device).manual_seed(0))
    assert loss.dim() == 0 and loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    opt.step()
    method.after_step()
    assert all(torch.isfinite(p).all() for p in method.parameters())


def test_methods_expose_backbone_and_defaults():
    for name, cls in METHODS.items():
        method = make(name)
        assert isinstance(method.backbone, TinyBackbone)
        defaults = cls.defaults()
        assert isinstance(defaults, dict)
        assert build_method(name, TinyBackbone(), 32, defaults).params == method.params
    assert Rotation.defaults() == {"all_rotations": True}
    assert BYOL.defaults()["momentum"] == 0.99


def test_unknown_params_and_names_are_clear_errors():
    with pytest.raises(LensError, match=r"unknown param\(s\) \['temp'\].*temperature=0.2"):
        make("simclr", temp=0.1)
    with pytest.raises(LensError, match="unknown ssl method 'dino'.*rotation, rotation_cont"):
        make("dino")
    with pytest.raises(LensError, match="'simclr': temperature must be > 0"):
        make("simclr", temperature=-1)
    with pytest.raises(LensError, match="momentum must be in"):
        make("byol", momentum=1.5)
    with pytest.raises(LensError, match="max_shift"):
        make("byol", max_shift=-2)
    with pytest.raises(LensError, match="hidden_dim must be of type int"):
        make("simclr", hidden_dim=1.5)
    with pytest.raises(LensError, match="all_rotations must be of type bool"):
        make("rotation", all_rotations=1)
    assert make("simclr", temperature=1).params.temperature == 1.0
    with pytest.raises(LensError, match="feature_dim"):
        METHODS["rotation"](TinyBackbone(), 0)
