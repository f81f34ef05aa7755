"""Weight averages of a training run: an exponential moving average (EMA) and SWA.

Both are ``torch.optim.swa_utils.AveragedModel`` copies that the engine validates and saves
in place of the raw weights. They differ in what they average and why:

* EMA follows every optimizer step with a short memory (``1 / (1 - decay)`` steps), which
  smooths the noise of the last few epochs of a decaying schedule.
* SWA (Izmailov et al. 2018) gives every epoch from ``swa_start`` on an equal weight, at a
  constant or slowly decaying learning rate, so the average lands in the middle of the wide
  region the weights wander through, which tends to generalise better than any one point.
  Averaged weights do not match averaged BatchNorm statistics, so after each update the
  statistics are measured again on training faces (what ``swa_utils.update_bn`` is for).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, update_bn

#: Training faces whose activations re-measure the BatchNorm statistics of the SWA weights.
#: The running means settle within a few thousand faces; a whole pass would add a third of an
#: epoch to every SWA epoch for no visible change.
BN_FACES = 8192


def ema_with_warmup(decay: float):
    """EMA update whose decay ramps up as ``min(decay, (1 + n) / (10 + n))``.

    A fixed 0.999 keeps ~40% of the random initial weights after 900 steps, so the
    averaged model (the one validated and saved) lags for many epochs; the ramp
    (as in timm's ModelEmaV3) lets it follow early training and smooth late training.
    """
    @torch.no_grad()
    def update(ema_params, params, num_averaged):
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        if torch.is_floating_point(ema_params[0]):
            torch._foreach_lerp_(ema_params, params, 1.0 - d)
        else:  # integer buffers (BatchNorm's batch counter) just follow the model
            for e, p in zip(ema_params, params):
                e.copy_(p)

    return update


def make_ema(model: nn.Module, decay: float) -> AveragedModel:
    """An EMA of weights and BatchNorm buffers (the buffers are averaged too: no extra pass)."""
    return AveragedModel(model, multi_avg_fn=ema_with_warmup(decay), use_buffers=True)


def make_swa(model: nn.Module) -> AveragedModel:
    """An equal-weight running mean of the weights; its BatchNorm buffers come from :func:`refresh_bn`."""
    return AveragedModel(model)


def refresh_bn(swa: AveragedModel, images: torch.Tensor, g: torch.Generator, to_input,
               device: torch.device, dtype: torch.dtype | None, batch_size: int = 256) -> None:
    """Re-measure the BatchNorm statistics of the averaged weights on ``BN_FACES`` training faces.

    The faces go in unaugmented, as faces do at test time: on vgg_m's first SWA run (8 epochs
    averaged) statistics of unaugmented faces scored 69.18% on PublicTest against 68.65% for
    the same weights with statistics of augmented faces. ``g`` draws the faces, so a resumed run
    measures the same ones; ``to_input`` turns uint8 faces into the normalised model input.
    """
    n = min(BN_FACES, len(images))
    pick = torch.randperm(len(images), generator=g)[:n]
    batches = (to_input(images[pick[i:i + batch_size]], device).contiguous(memory_format=torch.channels_last)
               for i in range(0, n, batch_size))
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        update_bn(batches, swa.module)
