"""NumPy reference implementations: the test oracle for the CPU kernels.

Simple and obviously right rather than fast; every function works in the dtype
it is given (tests use float64). Forward functions return new arrays; backward
functions return the gradients as a tuple. Padding is always the resolved
(top, bottom, left, right) tuple of node.meta["pads"].
"""
from cnndsl.kernels.reference.activation import (  # noqa: F401
    leaky_relu, leaky_relu_backward, relu, relu_backward, sigmoid, sigmoid_backward, softmax,
    softmax_backward, tanh, tanh_backward)
from cnndsl.kernels.reference.batchnorm import (  # noqa: F401
    batchnorm_backward, batchnorm_inference, batchnorm_train)
from cnndsl.kernels.reference.conv import (  # noqa: F401
    conv2d, conv2d_backward, conv2d_output_size, conv_transpose2d, conv_transpose2d_backward,
    conv_transpose2d_output_size)
from cnndsl.kernels.reference.dense import dense, dense_backward  # noqa: F401
from cnndsl.kernels.reference.dropout import dropout, dropout_backward, dropout_keep_mask  # noqa: F401
from cnndsl.kernels.reference.loss import (  # noqa: F401
    mse, pixel_cross_entropy, smooth_l1, softmax_cross_entropy)
from cnndsl.kernels.reference.pool import (  # noqa: F401
    avgpool2d, avgpool2d_backward, global_avgpool, global_avgpool_backward, l2pool2d, l2pool2d_backward,
    maxpool2d, maxpool2d_backward)
from cnndsl.kernels.reference.tensor import (  # noqa: F401
    add, add_backward, concat, concat_backward, flatten, flatten_backward, upsample_nearest,
    upsample_nearest_backward)
