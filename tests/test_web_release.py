"""``edge serve --bundle B --trust K``: the signed release is verified before its detector runs, and the page's
``/api/release`` shows it; a tampered release is refused with a message naming the file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from _web_server import WebServer, people_folder

pytest.importorskip("fastapi", reason="the web extra: pip install 'edgesight[web]'")
pytestmark = pytest.mark.slow
MODEL = "yolox_nano_416"


@pytest.fixture(scope="module")
def release(tmp_path_factory, model_dir):
    pytest.importorskip("cryptography")
    from edge.registry import get_card, resolve_file, resolve_model
    from export.bundle.keys import generate_keypair, load_private_key
    from export.bundle.write import BundleEntry, write_bundle

    priv, pub = generate_keypair(tmp_path_factory.mktemp("keys"))
    card = get_card(MODEL)
    labels = resolve_file(card.labels.file, card.labels.sha256) if card.labels else None
    out = tmp_path_factory.mktemp("bundles") / "board"
    write_bundle(out, [BundleEntry("detector", resolve_model(card), card, labels)], profile="board",
                 private_key=load_private_key(priv), report={}, report_md="")
    return out, pub


def test_serve_runs_the_verified_release_and_shows_it(tmp_path, data_dir, release):
    bundle, pub = release
    srv = WebServer(tmp_path, people_folder(data_dir, tmp_path / "source"), liveness_dir=None,
                    extra=["--bundle", str(bundle), "--trust", str(pub), "--no-faces"])
    try:
        doc = srv.request("GET", "/api/release").json()["release"]
        assert doc["profile"] == "board" and doc["key_id"]
        assert [m["name"] for m in doc["roles"]["detector"]] == [MODEL]
        assert srv.request("GET", "/api/faces").status == 503  # --no-faces
    finally:
        assert srv.stop() == 0
    assert str(bundle) in srv.log.read_text()  # the banner names the model file of the release


def test_a_tampered_release_is_refused_before_anything_runs(tmp_path, release):
    bundle, pub = release
    bad = tmp_path / "board"
    shutil.copytree(bundle, bad)
    manifest = bad / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"board"', '"b0ard"', 1))
    r = subprocess.run([sys.executable, "-m", "edge", "serve", "--source", "synthetic", "--bundle", str(bad), "--trust",
                        str(pub), "--listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "EDGE_WEB_TOKEN": "t" * 32})
    assert r.returncode == 2 and "manifest.json" in r.stderr and "Traceback" not in r.stderr
