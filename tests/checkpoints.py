"""pyannote.audio checkpoints the tests make themselves (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def save_checkpoint(model: Any, path: Path) -> Path:
    """Writes ``model`` (random weights, real architecture) as Model.from_pretrained reads it."""
    import pyannote.audio
    import torch

    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": "2.6.6",
        "pyannote.audio": {
            "versions": {"pyannote.audio": pyannote.audio.__version__},
            "architecture": {"module": type(model).__module__, "class": type(model).__name__},
            "specifications": model.specifications,
        },
    }
    torch.save(checkpoint, path)
    return path
