"""Batch augmentation: shapes, determinism, and that each knob does what it says (and only that)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fervid.training.augment import AugmentConfig, augment, cutmix, mix_batch, mixup  # noqa: E402
from fervid.data import load_faces  # noqa: E402
from fervid.training.engine import to_input  # noqa: E402

torch.set_num_threads(1)
TEST_FER = Path(__file__).resolve().parents[1] / "tests" / "data" / "fer"
OFF = dict(flip=0.0, rotate=0.0, shift=0.0, scale=0.0, crop=0.0, erase=0.0)


@pytest.fixture(scope="module")
def faces() -> torch.Tensor:
    """Real equalized faces, normalised as the engine feeds them."""
    fs = load_faces(TEST_FER, "test", use_cache=False)
    return to_input(torch.from_numpy(fs.images[:16]), torch.device("cpu"))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_shape_dtype_and_input_untouched(faces):
    before = faces.clone()
    out = augment(faces, AugmentConfig(crop=0.85), gen())
    assert out.shape == faces.shape and out.dtype == torch.float32
    assert torch.equal(faces, before)
    assert not torch.allclose(out, faces)


def test_same_seed_same_batch(faces):
    cfg = AugmentConfig(crop=0.9)
    a, b = augment(faces, cfg, gen(1)), augment(faces, cfg, gen(1))
    assert torch.equal(a, b)
    assert not torch.allclose(a, augment(faces, cfg, gen(2)))


def test_all_strengths_zero_is_identity(faces):
    out = augment(faces, AugmentConfig(**OFF), gen())
    assert torch.allclose(out, faces, atol=1e-4)


def test_flip_only_mirrors_exactly(faces):
    out = augment(faces, AugmentConfig(**{**OFF, "flip": 1.0}), gen())
    assert torch.allclose(out, faces.flip(-1), atol=1e-4)


@pytest.mark.parametrize("knob,value", [("rotate", 20.0), ("shift", 0.1), ("scale", 0.2), ("crop", 0.8)])
def test_each_geometric_knob_moves_pixels_without_erasing(faces, knob, value):
    out = augment(faces, AugmentConfig(**{**OFF, knob: value}), gen())
    changed = (out - faces).abs().flatten(1).amax(1) > 1e-3
    assert changed.float().mean() > 0.5, f"{knob}={value} left most faces unchanged"
    # A warp resamples the face: values stay within its range (border padding, bilinear).
    assert out.min() >= faces.min() - 1e-4 and out.max() <= faces.max() + 1e-4


def test_erase_replaces_one_rectangle(faces):
    out = augment(faces, AugmentConfig(**{**OFF, "erase": 1.0, "erase_area": 0.25}), gen())
    for i in range(len(faces)):
        diff = (out[i, 0] - faces[i, 0]).abs() > 1e-3  # above the identity warp's rounding
        assert diff.any(), f"face {i} was not erased"
        ys, xs = torch.nonzero(diff, as_tuple=True)
        box = diff[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        assert box.float().mean() > 0.9, "the erased pixels form one rectangle"
        assert diff.float().mean() <= 0.25 + 1e-6


def test_mixup(faces):
    y = torch.arange(len(faces))
    xm, ya, yb, lam = mixup(faces, y, 0.4, gen(5))
    assert 0.0 <= lam <= 1.0 and torch.equal(ya, y)
    perm = yb  # labels are 0..N-1, so yb is the partner permutation
    assert sorted(perm.tolist()) == y.tolist()
    assert torch.allclose(xm, lam * faces + (1 - lam) * faces[perm], atol=1e-6)
    again = mixup(faces, y, 0.4, gen(5))
    assert again[3] == lam and torch.equal(again[0], xm), "mixup draws only from the generator"
    lams = {round(mixup(faces, y, 0.4, gen(s))[3], 6) for s in range(20)}
    assert len(lams) > 10 and all(0 <= v <= 1 for v in lams)
    x0, _, _, lam0 = mixup(faces, y, 0.0, gen(5))
    assert lam0 == 1.0 and torch.equal(x0, faces)


def test_cutmix_pastes_one_box_and_weights_by_its_area(faces):
    y = torch.arange(len(faces))
    for seed in range(12):
        xc, ya, yb, lam = cutmix(faces, y, 1.0, gen(seed))
        perm = yb
        assert torch.equal(ya, y) and sorted(perm.tolist()) == y.tolist()
        from_partner = (xc == faces[perm]) & (xc != faces)  # pixels that changed to the partner's
        box = from_partner.any(0).any(0)  # [H, W]: where any face took its partner's pixels
        changed = xc != faces
        assert torch.equal(changed, changed & (xc == faces[perm])), "every changed pixel is the partner's"
        if box.any():
            ys, xs = torch.nonzero(box, as_tuple=True)
            area = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
            # a single box, and lam is what is left of the face (pixels equal by chance aside)
            assert 1 - lam == pytest.approx(float(area) / box.numel(), abs=0.02)
        assert 0.0 <= lam <= 1.0
    again = cutmix(faces, y, 1.0, gen(3))
    first = cutmix(faces, y, 1.0, gen(3))
    assert again[3] == first[3] and torch.equal(again[0], first[0]), "cutmix draws only from the generator"
    assert cutmix(faces, y, 0.0, gen(0))[3] == 1.0, "alpha 0: the Beta draw is 1, so no box"


def test_mix_batch_picks_mixup_cutmix_or_nothing(faces):
    y = torch.arange(len(faces))
    assert mix_batch(faces, y, 0.0, 0.0, gen()) is None
    only_mix = mix_batch(faces, y, 0.4, 0.0, gen(5))
    assert torch.equal(only_mix[0], mixup(faces, y, 0.4, gen(5))[0]), "mixup alone draws as it always did"
    assert torch.equal(mix_batch(faces, y, 0.0, 1.0, gen(5))[0], cutmix(faces, y, 1.0, gen(5))[0])
    kinds = set()
    for s in range(30):
        x, _, yb, lam = mix_batch(faces, y, 0.4, 1.0, gen(s))
        blended = torch.allclose(x, lam * faces + (1 - lam) * faces[yb], atol=1e-6)
        kinds.add("mixup" if blended and 0 < lam < 1 else "cutmix")
    assert kinds == {"mixup", "cutmix"}, "with both on, batches take either"


def test_extreme_but_valid_settings(faces):
    cfg = AugmentConfig(flip=0.5, rotate=180.0, shift=0.5, scale=0.9, crop=0.5, erase=1.0, erase_area=1.0)
    out = augment(faces, cfg, gen())
    assert torch.isfinite(out).all() and out.shape == faces.shape
    one = augment(faces[:1], AugmentConfig(), gen())
    assert one.shape == (1, 1, 48, 48)
    assert np.isfinite(one.numpy()).all()
