"""Knowledge distillation: train a model on the softened predictions of fervid models already trained.

FER-2013's labels are noisy (annotators agree on roughly two faces in three), so a teacher's
full distribution over the seven classes carries information the one-hot label throws away;
averaging several teachers (an ensemble) and distilling it is the usual way to put an
ensemble's accuracy into one small, fast model. Teachers are ordinary fervid ``.safetensors``
models, frozen, run on exactly the augmented batch the student sees.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BadInputError
from ..modelfile import split_model_list
from ..models.loading import load_model


def load_teachers(spec: str, classes: list[str], device: torch.device) -> list[nn.Module]:
    """The comma-separated fervid models of ``spec``, frozen in eval mode on ``device``.

    Their class lists must equal the run's, in order: a teacher of other classes would
    distil probabilities onto the wrong outputs without any error.
    """
    teachers = []
    for path in split_model_list(spec):
        model, meta = load_model(path)
        if list(meta["classes"]) != list(classes):
            raise BadInputError(f"teacher {path}: classes {','.join(meta['classes'])} "
                                f"differ from the run's {','.join(classes)}")
        model = model.to(device, memory_format=torch.channels_last).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        teachers.append(model)
    return teachers


@torch.no_grad()
def teacher_probs(teachers: list[nn.Module], x: torch.Tensor, temperature: float,
                  dtype: torch.dtype | None) -> torch.Tensor:
    """Mean of the teachers' softmax at ``temperature`` (an ensemble's averaged belief), in fp32."""
    with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        logits = [t(x).float() for t in teachers]
    return torch.stack([F.softmax(z / temperature, -1) for z in logits]).mean(0)


def distill_loss(student_logits: torch.Tensor, probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) at ``temperature``, times T² so its gradients keep the scale of the
    hard-label loss whatever T is (Hinton et al., 2015)."""
    log_q = F.log_softmax(student_logits.float() / temperature, -1)
    return F.kl_div(log_q, probs, reduction="batchmean") * temperature ** 2
