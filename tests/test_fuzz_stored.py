"""Property-based fuzzing of what the product has stored: lockout state, template records, bench
reports and signed releases.

Each property says: whatever the damage, the reader either accepts the file and works with it,
or raises the product's own error naming the file; nothing else is raised, and nothing that was
stored intact is lost or changed. ``EDGE_FUZZ_EXAMPLES`` raises the example count (long mode).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.errors import BenchReportError, BundleError, LockoutStateError, TemplateStoreError, UnknownUserError
from tests._fuzz import EXAMPLES, fuzz_settings, json_paths, json_values

FUZZ = fuzz_settings(deadline_ms=5000)
#: Each release example copies one file of the bundle: fewer of them by default.
FUZZ_RELEASE = fuzz_settings(deadline_ms=30000, examples=max(8, EXAMPLES // 4))


def _mutate(doc, data):
    """``doc`` with one value replaced by an arbitrary JSON value (or the whole document replaced)."""
    paths = list(json_paths(doc))
    if not paths or data.draw(st.integers(0, 9)) == 0:
        return data.draw(json_values)
    path = data.draw(st.sampled_from(paths))
    doc = json.loads(json.dumps(doc))
    target = doc
    for k in path[:-1]:
        target = target[k]
    if data.draw(st.booleans()) and isinstance(target, dict):
        del target[path[-1]]
    else:
        target[path[-1]] = data.draw(json_values)
    return doc


def _damage(blob: bytes, data) -> bytes:
    """Flip, truncate, extend or overwrite bytes of ``blob``."""
    how = data.draw(st.sampled_from(["flip", "truncate", "append", "splice"]))
    if how == "flip" and blob:
        i = data.draw(st.integers(0, len(blob) - 1))
        return blob[:i] + bytes([blob[i] ^ data.draw(st.integers(1, 255))]) + blob[i + 1:]
    if how == "truncate":
        return blob[:data.draw(st.integers(0, max(0, len(blob) - 1)))]
    extra = data.draw(st.binary(min_size=1, max_size=64))
    if how == "append":
        return blob + extra
    i = data.draw(st.integers(0, len(blob)))
    return blob[:i] + extra + blob[i + len(extra):]


# -- lockout state --------------------------------------------------------------------------

def _lockout_doc(now: float) -> dict:
    return {"version": 1, "users": {"alice": {"failures": 2, "locked_until": now + 30.0, "last_failure": now},
                                    "bob": {"failures": 0, "locked_until": 0.0, "last_failure": 0.0}}}


@FUZZ
@given(data=st.data())
def test_damaged_lockout_state_fails_closed_naming_the_file(tmp_path_factory, data):
    from edge.unlock.lockout import STATE_FILE, LockoutPolicy, LockoutTracker

    now = 1_800_000_000.0
    state = tmp_path_factory.mktemp("lockout")
    tracker = LockoutTracker(state, LockoutPolicy(), clock=lambda: now)
    text = json.dumps(_mutate(_lockout_doc(now), data), allow_nan=True)
    (state / STATE_FILE).write_text(text)
    try:
        status = tracker.check("alice")
    except LockoutStateError as e:
        assert str(state / STATE_FILE) in str(e) and math.isinf(e.until)
        with pytest.raises(LockoutStateError):  # an attempt is refused too, and nothing is rewritten
            tracker.begin_attempt("alice")
        assert (state / STATE_FILE).read_text() == text
        return
    # accepted: a sane status (a locked user stays locked; nothing NaN or negative)
    assert status.failures >= 0 and math.isfinite(status.locked_until) and status.locked_until >= 0


# -- template records -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_users(tmp_path_factory):
    from edge.unlock.keys import FileKeyProvider
    from edge.unlock.store import TemplateRecord, TemplateStore

    root = tmp_path_factory.mktemp("store")
    store = TemplateStore(root / "templates", FileKeyProvider(root / "key", create=True))
    rng = np.random.default_rng(0)
    for user in ("alice", "bob"):
        vectors = rng.normal(size=(3, 128)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store.save(TemplateRecord(user=user, model_id="sface", model_sha256="0" * 64, vectors=vectors))
    return root


@FUZZ
@given(data=st.data())
def test_a_damaged_template_record_is_refused_and_the_others_survive(two_users, tmp_path_factory, data):
    from edge.unlock.keys import FileKeyProvider
    from edge.unlock.store import TemplateStore

    root = tmp_path_factory.mktemp("store-copy")
    shutil.copytree(two_users, root, dirs_exist_ok=True)
    store = TemplateStore(root / "templates", FileKeyProvider(root / "key"))
    alice_before = store.load("alice")
    bob = store.path_for("bob")
    bob.write_bytes(_damage(bob.read_bytes(), data))
    try:
        store.load("bob")
    except (TemplateStoreError, UnknownUserError) as e:
        assert str(bob) in str(e) or "bob" in str(e)
    else:  # only an unchanged file may still open (e.g. a splice that wrote the same bytes)
        assert bob.read_bytes() == (two_users / bob.relative_to(root)).read_bytes()
    listing = store.load_all()
    assert "alice" in listing.users() and [p.path for p in listing.problems] in ([], [bob])
    alice = store.load("alice")
    assert np.array_equal(alice.vectors, alice_before.vectors)


# -- bench reports -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bench_report(tmp_path_factory, model_dir):
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run([sys.executable, "-m", "edge", "bench", "--model", "mobilenet_v1_0.25_128_quant",
                           "--iters", "5", "--warmup", "1", "--threads", "1", "--out", str(out),
                           "--format", "json"], cwd=out, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads((out / "bench.json").read_text())


@FUZZ
@given(data=st.data())
def test_a_mutated_bench_report_is_compared_or_refused_by_name(bench_report, tmp_path_factory, data):
    from edge.bench.compare import compare_reports, context_warnings, format_comparison
    from edge.bench.report import load_report, to_markdown

    path = tmp_path_factory.mktemp("report") / "old-run.json"
    path.write_text(json.dumps(_mutate(bench_report, data), allow_nan=True))
    try:
        old = load_report(path)
    except BenchReportError as e:
        assert "old-run.json" in str(e)
        return
    rows = compare_reports(old, bench_report)
    format_comparison(rows, context_warnings(old, bench_report))
    to_markdown(old)


# -- signed releases -----------------------------------------------------------------------------

@FUZZ_RELEASE
@given(data=st.data())
def test_a_damaged_release_is_refused_naming_the_file(release_build, tmp_path_factory, data):
    from edge.release import open_release

    src = release_build["dir"]
    files = sorted(p.relative_to(src) for p in src.rglob("*") if p.is_file())
    victim = data.draw(st.sampled_from(files))
    dst = tmp_path_factory.mktemp("release") / "rpi5"
    shutil.copytree(src, dst, copy_function=os.link)  # hard links: only the victim is rewritten
    target = dst / victim
    blob = _damage(target.read_bytes(), data)
    target.unlink()
    target.write_bytes(blob)
    if blob == (src / victim).read_bytes():
        return  # the damage happened to change nothing
    with pytest.raises(BundleError) as err:
        open_release(dst, release_build["pub"])
    assert Path(victim).name in str(err.value) or str(victim) in str(err.value)
