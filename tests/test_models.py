import pytest
import torch
import torch.nn.functional as F

from lens.errors import LensError
from lens.models import MODELS, build_backbone, build_classifier
from lens.models.vit import choose_patch_size

torch.set_num_threads(2)

# the CUDA cases run where a GPU is present; CI has none and runs the CPU cases
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
FEATURE_DIMS = {"resnet18": 512, "cnn_attention": 256, "vit_tiny": 192}


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def test_registry_lists_the_three_backbones():
    assert set(MODELS) == set(FEATURE_DIMS)


@pytest.mark.parametrize("name", sorted(FEATURE_DIMS))
@pytest.mark.parametrize("channels,size", [(1, 150), (3, 64), (3, 150), (1, 64)])
def test_backbone_feature_shapes(name, channels, size):
    torch.manual_seed(0)
    model = build_backbone(name, channels, size).eval()
    assert model.feature_dim == FEATURE_DIMS[name]
    with torch.no_grad():
        out = model(torch.rand(2, channels, size, size))
    assert out.shape == (2, FEATURE_DIMS[name])
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(FEATURE_DIMS))
def test_classifier_runs_channels_last_under_autocast(name, device):
    torch.manual_seed(0)
    model = build_classifier(name, 3, 32, num_classes=3)
    model = model.to(device, memory_format=torch.channels_last)
    x = torch.rand(4, 3, 32, 32, device=device).to(memory_format=torch.channels_last)
    with torch.autocast(device, dtype=torch.bfloat16):
        logits = model(x)
    assert torch.isfinite(logits.float()).all()
    assert logits.shape == (4, 3)
    logits.float().sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


# transformers need a smaller step and more of them (no warm-up here)
LEARN_SCHEDULE = {"resnet18": (8, 1e-3), "cnn_attention": (8, 1e-3), "vit_tiny": (60, 1e-4)}


@pytest.mark.parametrize("name", sorted(FEATURE_DIMS))
def test_classifier_learns_a_tiny_batch(name):
    torch.manual_seed(0)
    model = build_classifier(name, 1, 16, num_classes=2)  # small images: a quick test
    x = torch.rand(8, 1, 16, 16)
    x[1::2, :, 6:10, 6:10] += 1.0  # class 1 carries a bright central source
    y = torch.tensor([0, 1] * 4)
    steps, lr = LEARN_SCHEDULE[name]
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 < 0.5 < losses[0]


def test_classifier_exposes_backbone_and_head_for_finetuning():
    model = build_classifier("resnet18", 1, 64, num_classes=3)
    assert model.head.in_features == 512 and model.head.out_features == 3
    fresh = build_backbone("resnet18", 1, 64)
    fresh.load_state_dict(model.backbone.state_dict())  # same keys: encoder.pt round trip
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        "head.weight", "head.bias"
    ]


def test_unknown_model_lists_valid_names():
    with pytest.raises(LensError, match="unknown model 'resnet50'.*resnet18, cnn_attention, vit"):
        build_backbone("resnet50", 1, 64)


def test_bad_sizes_are_clear_errors():
    with pytest.raises(LensError, match="at least 2 classes"):
        build_classifier("resnet18", 1, 64, num_classes=1)
    with pytest.raises(LensError, match="in_channels"):
        build_backbone("resnet18", 0, 64)
    with pytest.raises(LensError, match="image_size 334"):
        build_backbone("vit_tiny", 1, 334)


def test_vit_patch_choice():
    assert choose_patch_size(150) == 10
    assert choose_patch_size(64) == 8
    assert choose_patch_size(32) == 4
    assert choose_patch_size(128) == 16
    with pytest.raises(LensError, match="crop or resize"):
        choose_patch_size(97)
