"""The .cnn language front end: text -> AST -> graph IR (+ training configuration).

    from cnndsl.frontend import load, loads
    program = load("examples/lenet5.cnn")
"""
from cnndsl.frontend.program import Program, load, loads
from cnndsl.frontend.training import TrainingConfig

__all__ = ["Program", "TrainingConfig", "load", "loads"]
