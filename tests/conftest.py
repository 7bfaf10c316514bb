"""Shared fixtures: models and data are reached through edge.paths (EDGE_MODEL_DIR / EDGE_DATA_DIR)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge import paths


@pytest.fixture(scope="session", autouse=True)
def _isolated_home(tmp_path_factory):
    """Converters and caches write under $HOME: point everything at a temporary directory."""
    home = tmp_path_factory.mktemp("home")
    old = {k: os.environ.get(k) for k in ("EDGE_CACHE_DIR", "XDG_CACHE_HOME", "TORCH_HOME", "EDGE_OFFLINE",
                                          "EDGE_BUNDLE", "EDGE_TRUST", "EDGE_RELEASES_DIR")}
    # No release from the machine running the tests: tests that want one say so.
    os.environ.pop("EDGE_BUNDLE", None)
    os.environ.pop("EDGE_TRUST", None)
    os.environ["EDGE_RELEASES_DIR"] = str(home / "no-releases")
    os.environ["EDGE_CACHE_DIR"] = str(home / "edge-cache")
    os.environ["XDG_CACHE_HOME"] = str(home / "xdg-cache")
    os.environ["TORCH_HOME"] = str(home / "torch")
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def model_dir() -> Path:
    dirs = paths.model_dirs()
    if not dirs:
        pytest.skip("no model directory: set EDGE_MODEL_DIR (default ../shared/models)")
    return dirs[0]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = paths.data_dir()
    if d is None:
        pytest.skip("no data directory: set EDGE_DATA_DIR (default ../shared/data)")
    return d


@pytest.fixture(scope="session")
def samples(data_dir) -> Path:
    return data_dir / "samples"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI (env ``CI`` set) a skipped test is a failure: a missing ../shared, runtime or
    Debian package must break the run, not silently shrink it."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI (CI is set, so this fails instead): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """The same for a whole module skipped at collection (``pytest.importorskip`` of a runtime)."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI (CI is set, so this fails instead): {reason}"


# -- one real signed release per session, shared by the release, self-test and flash tests -------

RELEASE_PROFILE = Path(__file__).resolve().parent.parent / "firmware_configs" / "rpi5.toml"
RELEASE_ROLES = "classifier,detector,face_detector,face_embedder,liveness"


@pytest.fixture(scope="session")
def release_build(tmp_path_factory, model_dir, data_dir):
    """``edge-export build --profile rpi5`` (reduced: float TFLite, no fallback) → a signed directory
    and .tar.gz, and the keys."""
    pytest.importorskip("litert_torch")
    from export.bundle.keys import generate_keypair
    from export.cli import main as export_main

    priv, pub = generate_keypair(tmp_path_factory.mktemp("release-keys"))
    out = tmp_path_factory.mktemp("release-out")
    code = export_main(["build", "--profile", str(RELEASE_PROFILE), "--out", str(out), "--key", str(priv),
                        "--archive", "--only", RELEASE_ROLES, "--formats", "tflite_fp32", "--no-fallback",
                        "--max-calibration", "8", "-q"])
    assert code == 0
    return {"dir": out / "rpi5", "tar": out / "rpi5.tar.gz", "pub": pub, "priv": priv}
