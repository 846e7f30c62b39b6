"""Every op of the language, one module each; importing this package registers them all."""
from cnndsl.ops import input_op  # noqa: F401
from cnndsl.ops import conv  # noqa: F401
from cnndsl.ops import conv_transpose  # noqa: F401
from cnndsl.ops import pool  # noqa: F401
from cnndsl.ops import activation  # noqa: F401
from cnndsl.ops import dropout  # noqa: F401
from cnndsl.ops import batchnorm  # noqa: F401
from cnndsl.ops import dense  # noqa: F401
from cnndsl.ops import upsample  # noqa: F401
from cnndsl.ops import merge  # noqa: F401
from cnndsl.ops import global_maxpool  # noqa: F401
from cnndsl.ops import multiply  # noqa: F401
from cnndsl.ops import reshape  # noqa: F401
from cnndsl.ops import lrn  # noqa: F401
from cnndsl.ops import softmax_axis  # noqa: F401
from cnndsl.ops import depthwise  # noqa: F401  (written as a conv by the frontend)
from cnndsl.ops import training  # noqa: F401  (gradient, loss and optimizer-step ops)
from cnndsl.ops import fused  # noqa: F401  (fused ops made by the optimization passes, cnndsl/passes/)
