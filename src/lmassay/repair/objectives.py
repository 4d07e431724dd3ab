"""The repair losses, each a mean over the scored positions of a batch of windows.

Shapes: ``B`` windows of ``T`` tokens; ``V`` the vocabulary columns both models share.
"""

from __future__ import annotations

import torch


def next_token_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``tokens[:, 1:]`` under ``logits[:, :-1]`` (nats per token)."""
    scores = logits[:, :-1].float()  # (B, T-1, V)
    targets = tokens[:, 1:]  # (B, T-1)
    return torch.nn.functional.cross_entropy(
        scores.reshape(-1, scores.shape[-1]), targets.reshape(-1)
    )


def kl_per_position(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """KL(teacher ‖ student) at each position, in nats, over the columns both models have: shape
    ``(B, T)``.

    Each distribution is the softmax of its own logits restricted to the shared ``V`` columns, so
    models whose output widths differ (padding rows) compare on the real vocabulary.
    """
    width = min(student_logits.shape[-1], teacher_logits.shape[-1])
    student = torch.log_softmax(student_logits[..., :width].float(), dim=-1)  # (B, T, V)
    teacher = torch.log_softmax(teacher_logits[..., :width].float(), dim=-1)  # (B, T, V)
    return (teacher.exp() * (teacher - student)).sum(dim=-1)  # (B, T)


def kl_to_teacher(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean of :func:`kl_per_position` over all positions."""
    return kl_per_position(student_logits, teacher_logits).mean()
