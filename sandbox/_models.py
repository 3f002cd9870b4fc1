"""Models the package ships (for demos and tests)."""

from __future__ import annotations

from pathlib import Path

_DIR = Path(__file__).resolve().parent / "models"


def tiny_model_path() -> Path:
    """Path of ``tiny_mlp.onnx``: input ``x`` float32 [N, 16] -> output ``y`` float32 [N, 4].

    Made deterministically by ``python -m sandbox.models.make_tiny_mlp``.
    """
    return _DIR / "tiny_mlp.onnx"
