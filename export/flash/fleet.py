"""Flash a fleet through Ansible (``ansible-core``): rolling batches, a failure budget, a result table.

No home-made orchestrator: Ansible reads the inventory, connects (the same OpenSSH client and
options as a single flash), rolls through the hosts ``serial`` at a time and stops the play when
more than ``max_fail_percentage`` of a batch fails. Each host runs exactly what a single flash runs
(``edge release deploy``, which verifies, self-tests, benches, switches, checks health and rolls
back on the device); its JSON record comes back to the workstation and makes the table.

Per host, inventory variables override the command-line settings where devices differ:
``edgesight_remote_edge`` (the device's edge command), ``edgesight_restart_cmd``,
``edgesight_health_url`` and ``edgesight_staging`` (where the upload goes, default /tmp).

The playbook is generated (written as JSON, which is YAML) next to the results, so it can be read,
kept, or run again by hand with ``ansible-playbook -i hosts.ini flash.yml``.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from edge.deploy import RECORD_MARK
from export.flash.command import FlashSettings, prepare_bundle

__all__ = ["flash_fleet", "build_playbook", "inventory_hosts", "format_table", "NOT_ATTEMPTED"]

NOT_ATTEMPTED = "not attempted"
NO_RECORD = "failed before deploy"


def _tool(name: str) -> str:
    here = Path(sys.executable).with_name(name)
    found = str(here) if here.is_file() else shutil.which(name)
    if not found:
        raise ImportError(f"{name} not found: fleets are flashed with Ansible; install it with "
                          "pip install 'edgesight[fleet]' (ansible-core)")
    return found


def inventory_hosts(inventory: Path, limit: str | None = None) -> list[str]:
    """Host names of ``inventory`` in Ansible's order (``ansible-inventory --list``)."""
    if not Path(inventory).is_file():
        raise FileNotFoundError(f"--inventory {inventory}: file not found (an Ansible inventory, e.g. hosts.ini)")
    cmd = [_tool("ansible-inventory"), "-i", str(inventory), "--list"] + (["--limit", limit] if limit else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ValueError(f"--inventory {inventory}: Ansible cannot read it: {proc.stderr.strip()[-500:]}")
    doc = json.loads(proc.stdout)
    seen: list[str] = []

    def walk(group: str) -> None:
        g = doc.get(group) or {}
        for h in g.get("hosts", []):
            if h not in seen:
                seen.append(h)
        for child in g.get("children", []):
            walk(child)

    walk("all")
    if not seen:
        raise ValueError(f"--inventory {inventory}: no hosts" + (f" match --limit {limit}" if limit else ""))
    return seen


#: Inventory variables that set, per host, what differs between devices (else the CLI's options,
#: else the device profile's defaults).
HOST_VARS = {"edgesight_remote_edge": "remote_edge", "edgesight_restart_cmd": "--restart-cmd",
             "edgesight_health_url": "--health-url"}


def _deploy_cmd(settings: FlashSettings, staged: str, sha256: str) -> str:
    """The deploy command line, with the per-host inventory variables of :data:`HOST_VARS` spliced in."""
    words = settings.remote_command(staged, sha256)
    edge_len = len(shlex.split(settings.remote_edge))
    rest = [shlex.quote(w) if "{{" not in w else w for w in words[edge_len:]]
    edge = "{{ edgesight_remote_edge | default(%s) }}" % json.dumps(settings.remote_edge)
    extra = "".join(" {{ ('%s ' ~ (%s | quote)) if %s is defined else '' }}" % (flag, var, var)
                    for var, flag in HOST_VARS.items() if flag.startswith("--"))
    return f"{edge} {' '.join(rest)}{extra}"


def build_playbook(archive: Path, sha256: str, settings: FlashSettings, *, serial: int, max_fail_percent: float,
                   results: Path, title: str) -> list[dict]:
    """The play: upload, ``edge release deploy``, keep its output here, remove the upload; fail the
    host (counted against ``max_fail_percentage``) when the device refused or rolled back."""
    staged = "{{ edgesight_staging | default('/tmp') }}/edgesight-flash-" + sha256[:16] + ".tar.gz"
    return [{
        "name": f"edgesight flash {title}",
        "hosts": "all",
        "gather_facts": False,
        "serial": serial,
        "max_fail_percentage": max_fail_percent,
        "tasks": [{
            "name": "flash",
            "block": [
                {"name": "upload the bundle", "ansible.builtin.copy": {"src": str(archive), "dest": staged, "mode": "0600"}},
                {"name": "edge release deploy (verify, self-test, bench, switch, health; rollback on failure)",
                 "ansible.builtin.command": {"cmd": _deploy_cmd(settings, staged, sha256)},
                 "register": "deploy", "failed_when": False, "changed_when": "deploy.rc == 0"},
                {"name": "device outcome",
                 "ansible.builtin.fail": {"msg": "{{ (deploy.stdout_lines | select('match', '^outcome ') | list "
                                                 "| last | default('no outcome: ' ~ (deploy.stderr | default('')))) }}"},
                 "when": "deploy.rc != 0"},
            ],
            "always": [
                {"name": "keep the device's record on the workstation",
                 "ansible.builtin.copy": {"content": "{{ deploy.stdout | default('') }}",
                                          "dest": str(results) + "/{{ inventory_hostname }}.out"},
                 "delegate_to": "localhost"},
                {"name": "remove the upload", "ansible.builtin.file": {"path": staged, "state": "absent"}},
            ],
        }],
    }]


def _record(path: Path) -> dict | None:
    if not path.is_file():
        return None
    for line in reversed(path.read_text(errors="replace").splitlines()):
        if line.startswith(RECORD_MARK):
            try:
                return json.loads(line[len(RECORD_MARK):])
            except ValueError:
                return None
    return None


def _row(host: str, rec: dict | None, attempted: bool) -> dict:
    if not attempted:
        return {"host": host, "outcome": NOT_ATTEMPTED, "release": "-", "selftest": "-", "bench": "-",
                "rolled_back": "-"}
    if rec is None:
        return {"host": host, "outcome": NO_RECORD, "release": "-", "selftest": "-", "bench": "-", "rolled_back": "no"}
    st = rec.get("selftest")
    selftest = "-" if not st else (f"passed {st['checks']}/{st['checks']}" if st["passed"]
                                   else f"FAILED {st['failed']}/{st['checks']}")
    bench = (rec.get("bench") or {}).get("verdict", "-")
    if bench == "slower" and rec.get("allow_slower") and rec.get("outcome") == "flashed":
        bench = "slower (allowed)"
    outcome = rec.get("outcome") or "?"
    if rec.get("failed_step"):
        outcome += f" at {rec['failed_step']}"
    return {"host": host, "outcome": outcome, "release": rec.get("release") or "-", "selftest": selftest,
            "bench": bench, "rolled_back": "yes" if rec.get("rolled_back") else "no", "current": rec.get("current")}


def format_table(rows: list[dict]) -> str:
    cols = [("host", "host"), ("outcome", "outcome"), ("release", "release"), ("selftest", "self-test"),
            ("bench", "bench"), ("rolled_back", "rolled back")]
    table = [[h for _, h in cols]] + [[str(r.get(k, "-")) for k, _ in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def flash_fleet(bundle: str | Path, inventory: Path, settings: FlashSettings, *, serial: int = 1,
                max_fail_percent: float = 0.0, identity: Path | None = None, known_hosts: Path | None = None,
                trust: Path | None = None, limit: str | None = None, record_dir: Path | None = None,
                say: Callable[[str], None] = print) -> dict:
    """Run the rollout (see the module docstring). Returns ``{"rows": [...], "ansible_exit": n, ...}``."""
    if serial < 1:
        raise ValueError(f"--serial must be at least 1, got {serial}")
    if not 0 <= max_fail_percent <= 100:
        raise ValueError(f"--max-fail-percent must be in [0, 100], got {max_fail_percent}")
    playbook_cmd = _tool("ansible-playbook")
    hosts = inventory_hosts(inventory, limit)
    prep = prepare_bundle(bundle, trust)
    t0 = time.monotonic()
    work = Path(record_dir) if record_dir is not None else Path(tempfile.mkdtemp(prefix="edgesight-fleet-"))
    results = work / f"fleet-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    results.mkdir(parents=True, exist_ok=True)
    try:
        title = prep.release_id or Path(bundle).name
        playbook = results / "flash.yml"
        playbook.write_text(json.dumps(build_playbook(prep.archive, prep.sha256, settings, serial=serial,
                                                      max_fail_percent=max_fail_percent, results=results,
                                                      title=title), indent=1))
        say(f"fleet: {len(hosts)} host(s) from {inventory}, {serial} at a time, stop when more than "
            f"{max_fail_percent:g}% of a batch fails; playbook {playbook}")
        ssh_args = "-o ControlMaster=auto -o ControlPersist=10s -o BatchMode=yes -o StrictHostKeyChecking=accept-new"
        if known_hosts is not None:
            ssh_args += f" -o UserKnownHostsFile={known_hosts}"
        env = {**os.environ, "ANSIBLE_SSH_ARGS": ssh_args, "ANSIBLE_HOST_KEY_CHECKING": "True",
               "ANSIBLE_RETRY_FILES_ENABLED": "False", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0",
               "PYTHONWARNINGS": "ignore",  # library deprecation notices interleaved with the play's lines
               "ANSIBLE_PYTHON_INTERPRETER": os.environ.get("ANSIBLE_PYTHON_INTERPRETER", "auto_silent")}
        cmd = [playbook_cmd, "-i", str(inventory), str(playbook)]
        if identity is not None:
            cmd += ["--private-key", str(identity)]
        if limit:
            cmd += ["--limit", limit]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", stdin=subprocess.DEVNULL)
        for line in proc.stdout:
            if line.strip():
                say(f"ansible | {line.rstrip()}")
        code = proc.wait()
    finally:
        prep.cleanup()
    rows = []
    for h in hosts:
        out = results / f"{h}.out"
        rows.append(_row(h, _record(out), out.exists()))
    summary = {"inventory": str(inventory), "bundle": str(bundle), "sha256": prep.sha256, "serial": serial,
               "max_fail_percent": max_fail_percent, "ansible_exit": code, "seconds": round(time.monotonic() - t0, 3),
               "rows": rows, "playbook": str(playbook), "results": str(results)}
    (results / "fleet.json").write_text(json.dumps(summary, indent=1))
    say(format_table(rows))
    ok = sum(r["outcome"] in ("flashed", "unchanged") for r in rows)
    say(f"fleet: {ok}/{len(rows)} host(s) on the new release in {summary['seconds']:.1f} s; "
        f"records in {results}")
    return summary
