"""Each kernel compiles once: no second signature of a cnndsl kernel for a literal argument, a
uint64 loop index or another array rank (issue 14). Numba compiles a callee once per combination
of argument types, and a constant argument (`0`, `True`) is a type of its own (`Literal[int](0)`),
so one stray literal or 4-D view doubled a kernel's compile time. Counted with Numba's compile
events in a fresh process with an empty cache.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter

# A convolution whose input has a gradient, at stride 2 (its input gradient takes the im2col path,
# and so conv._check_ws), a convolution at stride 1 (the direct kernels and their fused epilogue),
# dense layers with and without an activation (the fused dense epilogue and its gradient on 2-D
# arrays, the convolution's on 4-D ones), max pooling and cross-entropy.
NETWORK = """
network Signatures(classes = 10) {
  input image: 1x17x17
  conv 4 kernel=3 padding=same relu
  conv 8 kernel=3 stride=2 relu
  maxpool 2
  flatten
  dense 16 relu
  dense classes -> logits
}

train {
  batch 8
  optimizer sgd lr=0.05 momentum=0.9
  loss logits cross_entropy
}
"""

SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import cnndsl
    from cnndsl.backend.compile_events import counting
    from cnndsl.train.optim import SGD

    model = cnndsl.compile(sys.argv[1])
    model.set_optimizer(SGD(model.store.params, lr=0.01, momentum=0.9))
    x = np.random.default_rng(0).random((8,) + model.input_shape, dtype=np.float32)
    with counting() as c:
        model.train_step(x, model.example_targets(8), 0)
        model.evaluate(x, model.example_targets(8), 8)
        model.predict(x)
    print(json.dumps([[r.qualname, r.signature] for r in c.records]))
""")


def test_each_kernel_compiles_for_one_signature(tmp_path):
    path = tmp_path / "signatures.cnn"
    path.write_text(NETWORK)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), CNNDSL_COMPILE_WORKERS="1")
    env.pop("NUMBA_BOUNDSCHECK", None)
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(path)], capture_output=True, text=True, env=env,
                          timeout=900)
    assert done.returncode == 0, done.stderr
    records = [(name, sig) for name, sig in json.loads(done.stdout.strip().splitlines()[-1])
               if name.startswith("cnndsl.")]
    assert len(records) > 20  # the counter saw the kernels compile (an empty cache)
    literal = [f"{name}{sig}" for name, sig in records if "Literal[" in sig]
    assert literal == [], literal
    twice = {name: n for name, n in Counter(name for name, _ in records).items() if n > 1}
    assert twice == {}, [f"{name}{sig}" for name, sig in records if name in twice]
    # the activation table's loops are one function, called (not inlined) from every epilogue
    assert sum(name.endswith("._activate_affine_table") for name, _ in records) <= 1
    # What a network of relu layers and 2x2 pools leaves out (issue 14: each is CPU seconds cold).
    # Its launchers pass relu's code as np.uint8 (epilogue.KERNEL_CODE), so no gradient of another
    # activation is compiled: not the gradient table, not one of its scalar functions.
    names = {name for name, _ in records}
    assert "cnndsl.kernels.cpu.epilogue._activation_grad_table" not in names
    grads = {name.rsplit(".", 1)[1] for name in names
             if name.startswith("cnndsl.kernels.activations.") and name.endswith("_grad")}
    assert grads <= {"_relu_grad"}, grads
    # the 2x2 max pool's own kernel, chosen by the launcher: the general window loop is not compiled
    assert "cnndsl.kernels.cpu.pool._maxpool_2x2_forward" in names
    assert "cnndsl.kernels.cpu.pool._maxpool_plane" not in names
