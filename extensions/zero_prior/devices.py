"""Where zero-prior runs models when the caller does not say: the one CUDA-or-CPU default."""

from __future__ import annotations


def default_device(device: str | None = None) -> str:
    """``device`` if given, else ``"cuda"`` when a CUDA GPU is visible, else ``"cpu"``.

    >>> default_device("cpu")
    'cpu'
    """
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
