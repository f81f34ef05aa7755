"""The model registry: every registered architecture builds, runs and reports its cost."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from fervid.errors import BadInputError  # noqa: E402
from fervid.models import count_flops, count_params, create_model, describe_model, list_models  # noqa: E402

torch.set_num_threads(1)


def test_registry_lists_the_documented_families():
    names = list_models()
    assert names == sorted(names)
    for expected in ("baseline", "vgg_tiny", "vgg_s", "vgg_m", "vgg_l", "resnet_s", "resnet_m"):
        assert expected in names
    for name in names:
        assert describe_model(name), f"{name} has no one-line description"


@pytest.mark.parametrize("name", list_models())
def test_every_model_builds_and_runs(name):
    for num_classes in (2, 5, 7):
        torch.manual_seed(0)
        model = create_model(name, num_classes=num_classes)
        model.eval()
        with torch.no_grad():
            out = model(torch.randn(3, 1, 48, 48))
        assert out.shape == (3, num_classes) and out.dtype == torch.float32
        assert torch.isfinite(out).all()
    model.train()
    out = model(torch.randn(2, 1, 48, 48))  # train mode: batch norm on a batch of two works
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    params = count_params(model)
    assert params == sum(p.numel() for p in model.parameters()) > 1000
    flops = count_flops(model)
    assert flops >= 2 * params  # every weight does at least one multiply-add per face
    assert model.training, "count_flops must leave the model in the mode it found it"


def test_model_cost_grows_with_width():
    def cost(name):
        m = create_model(name)
        return count_params(m), count_flops(m)

    tiny, s, m, large = (cost(n) for n in ("vgg_tiny", "vgg_s", "vgg_m", "vgg_l"))
    assert tiny[0] < s[0] < m[0] < large[0] and tiny[1] < s[1] < m[1] < large[1]
    assert cost("resnet_s")[1] < cost("resnet_m")[1]


def test_same_seed_same_weights():
    torch.manual_seed(3)
    a = create_model("vgg_tiny").state_dict()
    torch.manual_seed(3)
    b = create_model("vgg_tiny").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_unknown_model_is_a_bad_input():
    with pytest.raises(BadInputError, match=r"unknown model 'vgg_xxl'; available: .*vgg_tiny"):
        create_model("vgg_xxl")
