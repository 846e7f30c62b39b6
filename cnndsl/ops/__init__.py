"""Every op of the language, one module each; importing this package registers them all."""
from cnndsl.ops import conv  # noqa: F401
