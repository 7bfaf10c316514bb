"""Shared helpers of the face tests: the MiniFASNet ONNX export (once per session) and images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

_LIVENESS_DIR: dict[str, Path] = {}


def exported_liveness_dir(tmp_path_factory) -> Path:
    """Export both MiniFASNet checkpoints to ONNX + cards once per test session (needs torch)."""
    if "dir" not in _LIVENESS_DIR:
        pytest.importorskip("torch", reason="the MiniFASNet export needs torch (the export extra)")
        pytest.importorskip("onnx", reason="the MiniFASNet export needs onnx (the export extra)")
        from export.cli import main as export_main

        out = tmp_path_factory.mktemp("liveness")
        assert export_main(["liveness", "--out", str(out)]) == 0
        _LIVENESS_DIR["dir"] = out
    return _LIVENESS_DIR["dir"]


def deepface_identities(data_dir: Path) -> dict[str, list[str]]:
    """``{person: [file, ...]}`` from deepface_identities.csv, files in listed order."""
    out: dict[str, list[str]] = {}
    for line in (data_dir / "faces" / "deepface_identities.csv").read_text().splitlines()[1:]:
        f, who = line.strip().split(",")
        out.setdefault(who, []).append(f)
    return out


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not found (set EDGE_DATA_DIR / EDGE_MODEL_DIR)")
    return path


def face_landmarks_at_yaw(yaw_deg: float, *, eye_dist: float = 60.0, centre=(320.0, 240.0)) -> np.ndarray:
    """5 FaceDetectorYN-order landmarks of a simple 3-D face turned by ``yaw_deg``, projected orthographically.

    Model (units of the inter-ocular distance, z towards the camera): eyes at (±0.5, 0, 0),
    nose tip at (0, 0.55, 0.5), mouth corners at (±0.4, 1.1, 0.1).
    """
    pts = np.array([[-0.5, 0, 0], [0.5, 0, 0], [0, 0.55, 0.5], [-0.4, 1.1, 0.1], [0.4, 1.1, 0.1]], np.float64)
    a = np.radians(yaw_deg)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    p = pts @ rot.T
    return (p[:, :2] * eye_dist + np.asarray(centre)).astype(np.float32)
