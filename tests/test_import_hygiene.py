"""edge/ must import on a device that has neither torch, tensorflow nor the onnx package."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import edge

ROOT = Path(__file__).resolve().parent.parent


def _edge_modules() -> list[str]:
    names = ["edge"]
    for info in pkgutil.walk_packages(edge.__path__, prefix="edge."):
        names.append(info.name)
    return names


def test_every_edge_module_imports_without_heavy_packages():
    mods = _edge_modules()
    assert len(mods) > 10
    code = (
        "import sys\n"
        "for m in ('torch', 'tensorflow', 'onnx', 'tflite', 'picamera2', 'libcamera'):\n"
        "    sys.modules[m] = None\n"
        "import importlib\n"
        f"for name in {mods!r}:\n"
        "    if name == 'edge.__main__':\n"
        "        continue\n"
        "    importlib.import_module(name)\n"
        "loaded = [m for m in ('torch', 'tensorflow', 'onnx') if sys.modules.get(m) is not None]\n"
        "assert not loaded, loaded\n"
        "print('ok', len(sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok")


def test_importing_edge_loads_no_runtime():
    code = ("import sys, edge, edge.engines, edge.registry, edge.sources, edge.cli\n"
            "print(sorted(m for m in ('onnxruntime', 'ai_edge_litert', 'tflite_runtime', 'torch') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
