"""Tokens, sessions and upload decoding of the web service, table-driven (no server needed)."""

from __future__ import annotations

from contextlib import nullcontext as does_not_raise

import cv2
import numpy as np
import pytest

from edge.web.auth import (SessionStore, TokenVerifier, WebAuthError, bearer_token, hash_token, load_verifier,
                           new_token, read_token_hashes, write_token_hash)
from edge.web.uploads import UploadError, UploadLimits, decode_upload


def test_tokens_are_random_and_only_their_hash_is_compared():
    a, b = new_token(), new_token()
    assert a != b and len(a) >= 43
    v = TokenVerifier([hash_token(a), hash_token(b)])
    assert v.check(a) and v.check(b)
    assert not v.check(a[:-1]) and not v.check("") and not v.check(None) and not v.check(hash_token(a))


@pytest.mark.parametrize("header, token", [
    ("Bearer abc", "abc"), ("bearer abc ", "abc"), ("Basic abc", None), ("Bearer", None), (None, None), ("", None)])
def test_bearer_header(header, token):
    assert bearer_token(header) == token


def test_load_verifier_sources_and_errors(tmp_path):
    hashes = tmp_path / "hashes"
    tok = new_token()
    write_token_hash(hashes, hash_token(tok))
    assert read_token_hashes(hashes) == [hash_token(tok)]
    with pytest.raises(WebAuthError, match="already exists"):
        write_token_hash(hashes, hash_token("other"))
    assert load_verifier(hash_file=hashes, env={}).check(tok)
    assert load_verifier(env={"EDGE_WEB_TOKEN": "e" * 20, "EDGE_WEB_TOKEN_HASH": str(hashes)}).check("e" * 20)
    f = tmp_path / "token"
    f.write_text("f" * 20 + "\n")
    f.chmod(0o600)
    assert load_verifier(token_file=f, hash_file=hashes, env={}).check("f" * 20)
    cases = [(dict(hash_file=tmp_path / "none", env={}), "not found"),
             (dict(env={"EDGE_WEB_TOKEN": "short"}), "at least 16"),
             (dict(token_file=tmp_path / "missing", env={}), "cannot read --token-file")]
    for kw, needle in cases:
        with pytest.raises(WebAuthError, match=needle):
            load_verifier(**kw)
    bad = tmp_path / "bad"
    bad.write_text("md5:abc\n")
    with pytest.raises(WebAuthError, match="line 1"):
        load_verifier(hash_file=bad, env={})


def test_no_token_anywhere_is_an_error_naming_the_ways_to_make_one(monkeypatch, tmp_path):
    import edge.web.auth as auth

    monkeypatch.setattr(auth, "DEFAULT_TOKEN_HASH_FILE", tmp_path / "absent")
    with pytest.raises(WebAuthError, match="--init-token.*--token-file.*EDGE_WEB_TOKEN"):
        load_verifier(env={})


def test_sessions_expire_and_can_be_dropped():
    now = [0.0]
    s = SessionStore(ttl_s=10, clock=lambda: now[0])
    sid = s.create()
    assert s.check(sid) and not s.check("forged") and not s.check(None)
    now[0] = 11
    assert not s.check(sid)
    sid = s.create()
    s.drop(sid)
    assert not s.check(sid)


def _jpeg(w: int, h: int) -> bytes:
    return cv2.imencode(".jpg", np.full((h, w, 3), 128, np.uint8))[1].tobytes()


@pytest.mark.parametrize("data, limits, expect", [
    (_jpeg(64, 48), UploadLimits(), does_not_raise()),
    (_jpeg(64, 48), UploadLimits(max_pixels=1000), pytest.raises(UploadError, match="64×48")),
    (_jpeg(64, 48), UploadLimits(max_image_bytes=10), pytest.raises(UploadError, match="bytes")),
    (b"", UploadLimits(), pytest.raises(UploadError, match="empty")),
    (b"%PDF-1.4 not an image", UploadLimits(), pytest.raises(UploadError, match="not a decodable image")),
])
def test_decode_upload(data, limits, expect):
    with expect as e:
        img = decode_upload(data, "image 'x'", limits)
        assert img.shape == (48, 64, 3) and img.dtype == np.uint8
    if e is not None:
        assert "image 'x'" in str(e.value) and e.value.status in (400, 413, 415)
