"""The optimizer's state at run time: the step count and the state arrays of one optimizer.

The `optimizer_step` node says which optimizer runs and with which hyperparameters
(cnndsl/ops/training/optimizers.py); what the step carries from one run to the next lives
here, kept by the runtime: the model's ParamStore holds the `OptimizerState` its steps update
(`ParamStore.optimizer_state`, set by `Model.set_optimizer`), and a device backend keeps a copy
of its arrays beside the parameters (`DeviceTensors.optimizer_arrays`). The launchers read and
advance it; they never call back into a Python optimizer object.

`state_dict()` is the checkpoint's layout, unchanged since the first release: the step count as a
0-d int64 array `step` and one float32 array per state key (`momentum_buffer`, `exp_avg`, ...),
each the size of the flat parameter buffer; `load_state_dict()` checks a saved one against it.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from cnndsl.diagnostics import file_error
from cnndsl.ops.training.optimizers import OPTIMIZERS


class OptimizerState:
    def __init__(self, kind: str, keys: tuple[str, ...], size: int):
        self.kind = kind
        self.keys = tuple(keys)
        self.size = int(size)
        self.step = 0  # steps taken; the next step is number step + 1 (Adam's bias correction reads it)
        self.arrays: dict[str, np.ndarray] = {k: np.zeros(self.size, np.float32) for k in self.keys}

    def state_dict(self) -> dict[str, np.ndarray]:
        out = {"step": np.array(self.step, dtype=np.int64)}
        out.update({k: v.copy() for k, v in self.arrays.items()})
        return out

    def load_state_dict(self, state: Mapping[str, np.ndarray], path="<optimizer state>") -> None:
        """Restore `state_dict()` output; a `CnnError` names `path` if it does not fit."""
        want = ("step",) + self.keys
        missing = [k for k in want if k not in state]
        if missing:
            raise file_error(path, f"optimizer state does not fit the {self.kind} optimizer",
                             expected="arrays " + ", ".join(want),
                             found="arrays " + (", ".join(sorted(state)) or "none"),
                             help="the checkpoint was written with a different optimizer; "
                                  "start a new run or use the same optimizer",
                             code="optimizer-state")
        for k in self.keys:
            arr = np.asarray(state[k])
            if arr.shape != (self.size,):
                raise file_error(path, f"optimizer state '{k}' has the wrong size",
                                 expected=f"{self.size} elements (the network's parameters)",
                                 found=f"shape {arr.shape}", code="optimizer-state")
        for k in self.keys:
            self.arrays[k][...] = np.asarray(state[k], dtype=np.float32)
        self.step = int(np.asarray(state["step"]))


def state_for(state: OptimizerState | None, attrs) -> OptimizerState:
    """The runtime's optimizer state, checked against the step node it is about to serve."""
    keys = OPTIMIZERS[attrs["kind"]].state(attrs)
    if state is None or state.kind != attrs["kind"] or state.keys != keys:
        have = "none" if state is None else f"{state.kind} ({', '.join(state.keys) or 'no arrays'})"
        raise RuntimeError(f"the optimizer step is a {attrs['kind']} step keeping {', '.join(keys) or 'no arrays'}, "
                           f"but the optimizer state given to the runtime is {have}: Model.set_optimizer() sets both")
    return state
