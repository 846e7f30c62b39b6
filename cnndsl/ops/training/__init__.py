"""Ops that exist only in training graphs: gradients, losses, targets, the optimizer step."""
from cnndsl.ops.training import gradients, losses, optimizers, yolo_loss  # noqa: F401
