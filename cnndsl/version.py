"""The package version (the same as pyproject.toml's), in a module of its own so that any stage can read it
(ONNX export writes it as producer_version) without importing the package facade, cnndsl/__init__.py."""
__version__ = "0.1.0"
