"""Ops that exist only in training graphs: gradients, losses, targets, the optimizer step."""
from cnndsl.ops.training import gradients, losses, yolo_loss  # noqa: F401
