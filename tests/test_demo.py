"""`edge demo`, the README's main job, runs end to end on the shared data."""

import re

from edge.cli import main as edge_main
from tests._unlock_helpers import liveness_models


def test_demo_runs_every_part(tmp_path_factory, data_dir, capsys):
    live = liveness_models(tmp_path_factory)
    assert edge_main(["demo", "--threads", "1", "--liveness-dir", str(live)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"cat\.bmp .*(Egyptian cat|tabby|tiger cat)", out)
    assert re.search(r"parrot\.jpg .*macaw", out)
    assert re.search(r"group_t1\.jpg .* 6 face\(s\)", out)
    assert re.search(r"bus\.jpg .*\bbus\b", out)
    assert "enrol person01 from 5 photos: exit 0" in out
    assert re.search(r"verify person01 \S+ +exit 0", out)
    assert re.search(r"verify stranger \S+ +exit 1", out)
    assert re.search(r"verify spoof image_F1\.jpg +exit 1", out)


def test_demo_without_liveness_models_says_how_to_make_them(data_dir, capsys):
    assert edge_main(["demo", "--threads", "1"]) == 0
    assert "edge-export liveness --out" in capsys.readouterr().out
