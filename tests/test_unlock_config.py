"""Default state paths: root keeps the FHS paths, other users get their XDG directories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge.unlock.config import UnlockConfig, default_paths


def test_root_keeps_the_fhs_paths():
    cfg = UnlockConfig.resolve(env={"HOME": "/root", "XDG_STATE_HOME": "/x"}, euid=0)
    assert (cfg.store_dir, cfg.key_file) == (Path("/var/lib/edgesight/templates"), Path("/etc/edgesight/unlock.key"))
    assert (cfg.audit_file, cfg.state_dir) == (Path("/var/log/edgesight/audit.jsonl"), Path("/var/lib/edgesight/state"))


def test_other_users_get_xdg_paths():
    env = {"HOME": "/home/ann", "XDG_STATE_HOME": "/data/state", "XDG_CONFIG_HOME": "relative/ignored"}
    paths = default_paths(1000, env)
    assert paths["store_dir"] == Path("/data/state/edgesight/templates")
    assert paths["state_dir"] == Path("/data/state/edgesight/state")
    assert paths["audit_file"] == Path("/data/state/edgesight/audit.jsonl")
    assert paths["key_file"] == Path("/home/ann/.config/edgesight/unlock.key")  # relative XDG value ignored
    cfg = UnlockConfig.resolve({"store_dir": "/s"}, env={"HOME": "/home/ann", "EDGE_UNLOCK_KEY": "/k"}, euid=1000)
    assert (cfg.store_dir, cfg.key_file, cfg.state_dir) == (Path("/s"), Path("/k"),
                                                            Path("/home/ann/.local/state/edgesight/state"))


def test_empty_path_error_names_the_option():
    with pytest.raises(ValueError, match="the --store path"):
        UnlockConfig.resolve({"store_dir": " "}, env={}, euid=0)


def test_a_user_without_root_gets_a_working_store_in_their_home(tmp_path, monkeypatch, capsys):
    """``edge unlock`` for a user other than root: nothing under /var or /etc, everything under HOME."""
    from edge.cli import main

    for var in ("EDGE_UNLOCK_STORE", "EDGE_UNLOCK_KEY", "EDGE_UNLOCK_AUDIT", "EDGE_UNLOCK_STATE",
                "XDG_STATE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["unlock", "list"]) == 0
    assert "no users enrolled" in capsys.readouterr().out
    assert main(["unlock", "reset", "ann"]) == 0
    assert (tmp_path / ".local/state/edgesight/audit.jsonl").is_file()
