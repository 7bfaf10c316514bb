"""Flashing (issue 10) against real OpenSSH servers on 127.0.0.1, each with its own device root and a
real ``edge serve`` as the device's service (tests/_sshd.py), and Ansible for fleets.

One real ``edge-export build`` (x86_dev profile: classifier + detector as ONNX fp32, about 30 s)
is made per module. Variants of it are re-signed with the test key so they verify and only the
device's later checks can tell: another build date (a second good release), a classifier whose
outputs are doubled (self-test fails), a classifier with an extra convolution whose result is
multiplied by zero and added (same outputs, much slower: the bench catches it), and a copy with one
flipped byte and the old signature (verification fails).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("cryptography")
onnx = pytest.importorskip("onnx")

from _sshd import Device, make_client_key  # noqa: E402
from edge.bundle import MANIFEST, SIGNATURE, verify_bundle  # noqa: E402
from edge.cards import load_card  # noqa: E402
from edge.release import release_id  # noqa: E402
from edge.release_store import ReleaseStore  # noqa: E402

pytestmark = pytest.mark.slow
if not (Path("/usr/sbin/sshd").is_file() and shutil.which("ssh")):
    pytest.skip("OpenSSH server/client not installed (Debian openssh-server, openssh-client: make system-deps)",
                allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / "firmware_configs" / "x86_dev.toml"
#: Short regression benches (the comparison's noise floor still applies); the slower variant is
#: several times slower, far outside it.
QUICK_BENCH = ["--bench-iters", "3", "--bench-warmup", "1", "--bench-processes", "1"]
#: Real kills wanted (trials whose flash ended before its kill do not count; at most MAX_TRIALS).
KILL_TRIALS, MAX_TRIALS = 20, 32


# -- bundles ---------------------------------------------------------------------------------------

def _resign(root: Path, priv: Path, created: str | None = None) -> None:
    from export.bundle.keys import load_private_key, sign_manifest
    from export.bundle.write import build_manifest

    old = json.loads((root / MANIFEST).read_text())
    manifest = build_manifest(root, profile=old["profile"], roles=old["roles"], created=created or old["created"])
    (root / MANIFEST).write_bytes(manifest)
    (root / SIGNATURE).write_bytes(sign_manifest(load_private_key(priv), manifest))


def _archive(root: Path) -> Path:
    out = root.parent / f"{root.parent.name}.tar.gz"
    with tarfile.open(out, "w:gz") as tf:
        for p in sorted(root.rglob("*")):
            tf.add(p, arcname=f"{root.name}/{p.relative_to(root).as_posix()}", recursive=False)
    return out


def _variant(src: Path, dst_parent: Path, priv: Path, created: str, change=None) -> Path:
    dst_parent.mkdir(parents=True)
    root = dst_parent / src.name
    shutil.copytree(src, root)
    if change is not None:
        model_path = next((root / "classifier").glob("*.onnx"))
        model = onnx.load(str(model_path))
        change(model)
        onnx.save(model, str(model_path))
        card_path = model_path.with_suffix(".json")
        card = load_card(card_path)
        card = dataclasses.replace(card, sha256=hashlib.sha256(model_path.read_bytes()).hexdigest(),
                                   size=model_path.stat().st_size)
        card_path.write_text(card.to_json())
    _resign(root, priv, created)
    return _archive(root)


def _doubled_output(model) -> None:
    """logits × 2: a valid model the self-test must refuse."""
    from onnx import helper, numpy_helper
    import numpy as np

    g = model.graph
    out = g.output[0].name
    for n in g.node:
        n.output[:] = [f"{o}_raw" if o == out else o for o in n.output]
    g.initializer.append(numpy_helper.from_array(np.array(2.0, np.float32), "flash_two"))
    g.node.append(helper.make_node("Mul", [f"{out}_raw", "flash_two"], [out]))


def _heavy_branch(model) -> None:
    """logits + 0 × mean(conv7x7, 64 channels, of the input): same outputs, several times the work."""
    from onnx import helper, numpy_helper
    import numpy as np

    g = model.graph
    inp, out = g.input[0].name, g.output[0].name
    for n in g.node:
        n.output[:] = [f"{o}_raw" if o == out else o for o in n.output]
    rng = np.random.default_rng(0)
    g.initializer.extend([numpy_helper.from_array(rng.normal(size=(64, 3, 7, 7)).astype(np.float32), "flash_w"),
                          numpy_helper.from_array(np.array(0.0, np.float32), "flash_zero")])
    g.node.extend([helper.make_node("Conv", [inp, "flash_w"], ["flash_conv"], pads=[3, 3, 3, 3]),
                   helper.make_node("Conv", ["flash_conv", "flash_w2"], ["flash_conv2"], pads=[1, 1, 1, 1],
                                    group=64),
                   helper.make_node("ReduceMean", ["flash_conv2"], ["flash_mean"], keepdims=0),
                   helper.make_node("Mul", ["flash_mean", "flash_zero"], ["flash_nothing"]),
                   helper.make_node("Add", [f"{out}_raw", "flash_nothing"], [out])])
    g.initializer.append(numpy_helper.from_array(rng.normal(size=(64, 1, 3, 3)).astype(np.float32), "flash_w2"))


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, model_dir, data_dir):
    from export.bundle.keys import generate_keypair
    from export.cli import main as export_main

    base = tmp_path_factory.mktemp("flash-bundles")
    priv, pub = generate_keypair(base / "keys")
    code = export_main(["build", "--profile", str(PROFILE), "--out", str(base / "good"), "--key", str(priv),
                        "--archive", "--only", "classifier,detector", "--formats", "onnx_fp32", "--no-fallback",
                        "--max-calibration", "8", "-q"])
    assert code == 0
    good = base / "good" / "x86_dev"
    created = json.loads((good / MANIFEST).read_text())["created"]
    later = created[:-3] + f"{(int(created[-3:-1]) + 1) % 60:02d}Z"
    out = {"pub": pub, "priv": priv, "good": base / "good" / "x86_dev.tar.gz",
           "good2": _variant(good, base / "good2", priv, later),
           "selftest_fails": _variant(good, base / "selftest_fails", priv, later, _doubled_output),
           "slower": _variant(good, base / "slower", priv, later, _heavy_branch)}
    # one flipped byte in the classifier of a copy of good2, signature left as it was
    flipped = base / "flipped" / "x86_dev"
    shutil.copytree(base / "good2" / "x86_dev", flipped)
    model = next((flipped / "classifier").glob("*.onnx"))
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    out["flipped"] = _archive(flipped)
    out["ids"] = {k: release_id(verify_bundle(out[k], pub)) for k in ("good", "good2", "selftest_fails", "slower")}
    return out


@pytest.fixture(scope="module")
def client_key(tmp_path_factory):
    return make_client_key(tmp_path_factory.mktemp("ssh-client"))


def _seed(dev: Device, bundles) -> None:
    """The device as an SD card written by --rootfs, booted: release `good` active, service up."""
    from export.cli import main as export_main

    assert export_main(["flash", str(bundles["good"]), "--rootfs", str(dev.root), "--trust", str(bundles["pub"])]) == 0
    dev.restart_service()
    dev.wait_release(bundles["ids"]["good"], timeout=120)


@pytest.fixture(scope="module")
def device(tmp_path_factory, bundles, client_key):
    dev = Device(tmp_path_factory.mktemp("pi-1"), "pi-1", client_key, bundles["pub"])
    try:
        _seed(dev, bundles)
        yield dev
    finally:
        dev.stop()


def _flash_cmd(dev: Device, bundle: Path, client_key: Path, records: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "export.cli", "flash", str(bundle), "--target", dev.target,
            "--identity", str(client_key), "--known-hosts", str(dev.workdir / "known_hosts"),
            "--restart-cmd", dev.restart_cmd, "--health-url", dev.health_url, "--health-timeout", "60",
            "--record-dir", str(records), *extra]


def _flash(dev, bundle, client_key, records, *extra) -> tuple[int, str, float]:
    t = time.monotonic()
    proc = subprocess.run(_flash_cmd(dev, bundle, client_key, records, *extra), capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - t


def _last_record(records: Path) -> dict:
    return json.loads(max(records.glob("*.json"), key=lambda p: p.stat().st_mtime).read_text())


def _assert_current_sound(dev: Device, pub: Path, allowed: set[str]) -> str:
    """`current` names a complete release that verifies, and one of ``allowed``."""
    cur = dev.current()
    assert cur in allowed, (cur, allowed)
    assert "/" not in cur and not cur.startswith(".")
    info = verify_bundle(dev.releases / cur, pub)  # every file there, signature good, nothing extra
    assert release_id(info) == cur
    return cur


# -- offline: --rootfs -------------------------------------------------------------------------------

def test_rootfs_writes_release_key_units_and_a_first_boot_self_test(bundles, tmp_path):
    from export.cli import main as export_main

    rootfs = tmp_path / "rootfs"  # laid out like a mounted Raspberry Pi OS root partition
    for d in ("etc/systemd/system", "var/lib", "usr/lib", "boot/firmware"):
        (rootfs / d).mkdir(parents=True)
    (rootfs / "usr/lib/os-release").write_text('PRETTY_NAME="Raspbian GNU/Linux 12 (bookworm)"\n')
    (rootfs / "etc/os-release").symlink_to("../usr/lib/os-release")
    pub, ids = bundles["pub"], bundles["ids"]

    assert export_main(["flash", str(bundles["good"]), "--rootfs", str(rootfs), "--trust", str(pub)]) == 0
    rel = rootfs / "var/lib/edgesight/releases"
    assert os.readlink(rel / "current") == ids["good"]  # relative: valid when the card is booted
    verify_bundle(rel / ids["good"], pub)
    assert (rootfs / "etc/edgesight/bundle_signing.pub").read_bytes() == pub.read_bytes()
    wants = rootfs / "etc/systemd/system/multi-user.target.wants"
    for unit in ("edge-web.service", "edge-firstboot-selftest.service"):
        assert (rootfs / "etc/systemd/system" / unit).is_file()
        assert os.readlink(wants / unit) == f"/etc/systemd/system/{unit}"
    assert (rootfs / "var/lib/edgesight/firstboot-selftest").is_file()

    # refused: a flipped byte (nothing written), a directory that is no root file system
    before = sorted(p.name for p in rel.iterdir())
    assert export_main(["flash", str(bundles["flipped"]), "--rootfs", str(rootfs), "--trust", str(pub)]) == 2
    assert sorted(p.name for p in rel.iterdir()) == before
    assert export_main(["flash", str(bundles["good"]), "--rootfs", str(tmp_path), "--trust", str(pub)]) == 2

    # The first boot runs the unit's own command line on the card (with the device root as /):
    # a release failing its self-test on the board is rolled back to the one before it.
    assert export_main(["flash", str(bundles["selftest_fails"]), "--rootfs", str(rootfs), "--trust", str(pub)]) == 0
    assert os.readlink(rel / "current") == ids["selftest_fails"]
    unit = (rootfs / "etc/systemd/system/edge-firstboot-selftest.service").read_text()
    exec_start = next(ln for ln in unit.splitlines() if ln.startswith("ExecStart="))[len("ExecStart="):]
    command = exec_start.replace("/opt/edgesight/venv/bin/edge", f"{sys.executable} -m edge")
    env = {**os.environ, "EDGE_DEVICE_ROOT": str(rootfs), "PYTHONPATH": str(ROOT)}
    env.pop("EDGE_RELEASES_DIR", None)
    proc = subprocess.run(shlex.split(command), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "self-test FAILED" in proc.stdout and f"current -> {ids['good']}" in proc.stdout
    assert os.readlink(rel / "current") == ids["good"]


# -- one device over SSH -------------------------------------------------------------------------------

def test_a_good_release_is_flashed_and_the_service_reports_it(device, bundles, client_key, tmp_path, capsys):
    ids = bundles["ids"]
    code, out, secs = _flash(device, bundles["good2"], client_key, tmp_path, *QUICK_BENCH)
    with capsys.disabled():
        print(f"\n--- flash of a good release ({secs:.1f} s) ---\n{out}")
    assert code == 0, out
    for step in ("receive", "verify", "selftest", "bench", "activate", "restart", "health", "keep", "outcome"):
        assert any(line.startswith(step) for line in out.splitlines()), (step, out)
    assert device.current() == ids["good2"]
    assert device.health()["release"] == ids["good2"]
    host = _last_record(tmp_path)
    assert host["outcome"] == "flashed" and host["release"] == ids["good2"]
    dev_rec = json.loads((device.root / "var/lib/edgesight/flash/last.json").read_text())
    assert dev_rec["outcome"] == "flashed" and dev_rec["previous"] == ids["good"]
    assert dev_rec["selftest"]["passed"] and dev_rec["bench"]["verdict"] in ("no change", "faster")
    assert [s["step"] for s in dev_rec["steps"]] == ["receive", "verify", "selftest", "bench", "activate", "restart",
                                                     "health", "keep"]
    listing = json.loads(device.edge("release", "list", "--json").stdout)
    assert listing["current"] == ids["good2"] and listing["previous"] == ids["good"]
    # the same release again: nothing to do
    code, out, _ = _flash(device, bundles["good2"], client_key, tmp_path, *QUICK_BENCH)
    assert code == 0 and "already the active release" in out


@pytest.mark.parametrize("variant, step, says", [
    ("flipped", "verify", "sha256 differs"),
    ("selftest_fails", "selftest", "rel_max_err"),
    ("slower", "bench", "slower than"),
])
def test_a_bad_release_leaves_current_on_the_good_one(device, bundles, client_key, tmp_path, variant, step, says,
                                                      capsys):
    good = device.current()
    bench = ["--bench-iters", "10", "--bench-warmup", "2", "--bench-processes", "2"] if variant == "slower" else QUICK_BENCH
    code, out, secs = _flash(device, bundles[variant], client_key, tmp_path, *bench)
    with capsys.disabled():
        print(f"\n--- flash of the {variant} release ({secs:.1f} s) ---\n{out}")
    assert code == 1, out
    assert says in out and "outcome   refused" in out
    assert device.current() == good and device.health()["release"] == good
    rec = _last_record(tmp_path)["device"]
    assert rec["outcome"] == "refused" and rec["failed_step"] == step and not rec["rolled_back"]
    assert {r.id for r in ReleaseStore(device.releases).list()} >= {good}
    assert bundles["ids"].get(variant) not in {r.id for r in ReleaseStore(device.releases).list()}


def test_a_service_that_does_not_come_back_is_rolled_back(device, bundles, client_key, tmp_path):
    good = device.current()
    other = bundles["ids"]["good"] if good != bundles["ids"]["good"] else bundles["ids"]["good2"]
    bundle = bundles["good"] if other == bundles["ids"]["good"] else bundles["good2"]
    dead = f"http://127.0.0.1:{device.port}/nothing-here"  # sshd's port: never an HTTP health answer
    cmd = _flash_cmd(device, bundle, client_key, tmp_path, *QUICK_BENCH)
    cmd[cmd.index("--health-url") + 1] = dead
    cmd[cmd.index("--health-timeout") + 1] = "2"
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 1, proc.stdout
    assert "rollback  ok" in proc.stdout and "outcome   rolled back" in proc.stdout
    assert device.current() == good
    rec = _last_record(tmp_path)["device"]
    assert rec["rolled_back"] and rec["failed_step"] == "health"
    device.wait_release(good)  # the service was restarted on the good release


def test_the_slower_release_goes_in_with_allow_slower_and_says_so(device, bundles, client_key, tmp_path):
    good = device.current()
    code, out, _ = _flash(device, bundles["slower"], client_key, tmp_path, "--allow-slower", "--bench-iters", "10",
                          "--bench-warmup", "2", "--bench-processes", "2")
    assert code == 0, out
    assert "flashed anyway (--allow-slower)" in out
    rec = _last_record(tmp_path)["device"]
    assert rec["allow_slower"] and rec["bench"]["verdict"] == "slower" and rec["outcome"] == "flashed"
    device.edge("release", "rollback", "--trust", str(bundles["pub"]))
    device.restart_service()
    device.wait_release(good)


# -- interruption ---------------------------------------------------------------------------------------

def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def test_kill_trials_never_leave_current_on_an_incomplete_or_unverified_release(device, bundles, client_key,
                                                                                tmp_path, capsys):
    """Real kills at random moments of real flashes, three ways: the workstation's flash process
    group (SIGKILL: the connection drops with it), the connection alone (the ssh client killed, the
    flash goes on and reports it), and the device's own `edge release deploy` (SIGKILL of its
    session: a crash or power cut on the device). After each, once the device is quiet, `current`
    must name a complete release that verifies (the old or the new one)."""
    ids, pub = bundles["ids"], bundles["pub"]
    good_pair = {ids["good"]: bundles["good"], ids["good2"]: bundles["good2"]}
    rng = random.Random(10)
    store = ReleaseStore(device.releases)
    # one uninterrupted flash sets the range the kill times are drawn from
    start = device.current()
    new = next(i for i in good_pair if i != start)
    code, out, full = _flash(device, good_pair[new], client_key, tmp_path, *QUICK_BENCH)
    assert code == 0, out
    outcomes: Counter = Counter()
    rows = []
    kills = 0
    for trial in range(MAX_TRIALS):
        if kills >= KILL_TRIALS:
            break
        kind = ("flash process", "connection", "device process")[trial % 3]
        before = device.current()
        new = next(i for i in good_pair if i != before)
        proc = subprocess.Popen(_flash_cmd(device, good_pair[new], client_key, tmp_path, *QUICK_BENCH),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        delay = rng.uniform(0.0, 0.9 * full)
        time.sleep(delay)
        killed = False
        if proc.poll() is None:
            if kind == "flash process":
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
            elif kind == "connection":
                for child in _children(proc.pid):
                    os.kill(child, signal.SIGKILL)  # the ssh client: the link is cut, the flash sees it
                    killed = True
            else:
                holder = store.holder()
                try:
                    cmdline = Path(f"/proc/{holder}/cmdline").read_bytes() if holder else b""
                    if b"deploy" in cmdline and os.getpgid(holder) != os.getpgrp():
                        os.killpg(os.getpgid(holder), signal.SIGKILL)  # the deploy and its self-test/bench children
                        killed = True
                except (OSError, ProcessLookupError):
                    pass
        proc.wait(timeout=600)
        kills += killed
        with store.lock(timeout_s=600):  # the device is quiet: no flash holds the store
            pass
        cur = _assert_current_sound(device, pub, {before, new})
        result = "switched" if cur == new else "kept"
        outcomes[(kind, result if killed else "finished before the kill")] += 1
        rows.append(f"{trial:2d} {kind:<15} kill at {delay:4.1f} s  {'killed' if killed else 'done first'}  "
                    f"current {'new' if cur == new else 'old'}")
        if device.health() is None or device.health().get("release") != cur:  # a killed restart: bring it back
            device.restart_service()
            device.wait_release(cur)
    leftovers = [p.name for p in device.releases.iterdir() if p.name.startswith(".incoming-")]
    with capsys.disabled():
        print(f"\n--- kill trials (uninterrupted flash {full:.1f} s) ---")
        print("\n".join(rows))
        for (kind, result), n in sorted(outcomes.items()):
            print(f"{kind:<15} {result:<26} {n}")
        print(f"trials {len(rows)}, real kills {kills}; current on an incomplete or "
              f"unverified release: 0; "
              f"hidden unpack leftovers awaiting the next sweep: {len(leftovers)}")
    assert kills >= KILL_TRIALS
    assert sum(n for (kind, r), n in outcomes.items() if r != "finished before the kill") == kills


# -- fleets through Ansible ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fleet(tmp_path_factory, bundles, client_key):
    pytest.importorskip("ansible")
    devs = []
    try:
        for name in ("pi-a", "pi-b"):
            dev = Device(tmp_path_factory.mktemp(name), name, client_key, bundles["pub"])
            devs.append(dev)
            _seed(dev, bundles)
        yield devs
    finally:
        for dev in devs:
            dev.stop()


def _inventory(devs, client_key, path: Path) -> Path:
    import getpass

    lines = ["[pis]"]
    for d in devs:
        lines.append(f"{d.name} ansible_host=127.0.0.1 ansible_port={d.port} ansible_user={getpass.getuser()} "
                     f"edgesight_staging={d.root / 'tmp'} edgesight_restart_cmd={d.restart_cmd} "
                     f"edgesight_health_url={d.health_url}")
    lines += ["", "[pis:vars]", f"ansible_python_interpreter={sys.executable}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def _fleet_flash(devs, bundle, client_key, tmp_path, *extra) -> tuple[int, str]:
    # each host's restart command and health URL are inventory variables (they differ by port here)
    tmp_path.mkdir(parents=True, exist_ok=True)
    inv = _inventory(devs, client_key, tmp_path / "hosts.ini")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local"),
           "ANSIBLE_REMOTE_TMP": str(tmp_path / "ansible-remote"), "ANSIBLE_HOME": str(tmp_path / "ansible-home")}
    cmd = [sys.executable, "-m", "export.cli", "flash", str(bundle), "--inventory", str(inv), "--identity",
           str(client_key), "--known-hosts", str(tmp_path / "known_hosts"), "--serial", "1",
           "--max-fail-percent", "0", "--record-dir", str(tmp_path / "records"), *QUICK_BENCH, *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    return proc.returncode, proc.stdout + proc.stderr


def test_ansible_rolls_two_hosts_in_two_batches_and_stops_when_one_fails(fleet, bundles, client_key, tmp_path,
                                                                         capsys):
    ids = bundles["ids"]
    code, out = _fleet_flash(fleet, bundles["good2"], client_key, tmp_path)
    with capsys.disabled():
        print(f"\n--- fleet flash, good release ---\n{out}")
    assert code == 0, out
    assert out.count("PLAY [edgesight flash") == 2  # serial 1: one batch per host
    for dev in fleet:
        assert dev.current() == ids["good2"]
        dev.wait_release(ids["good2"])
    table = out[out.index("host "):]
    assert "pi-a" in table and "pi-b" in table and table.count("flashed") == 2

    code, out = _fleet_flash(fleet, bundles["selftest_fails"], client_key, tmp_path / "2")
    with capsys.disabled():
        print(f"\n--- fleet flash, a release failing its self-test ---\n{out}")
    assert code == 1, out
    rows = {ln.split()[0]: ln for ln in out[out.index("host "):].splitlines()[2:4]}
    assert "refused at selftest" in rows["pi-a"] and "FAILED" in rows["pi-a"]
    assert "not attempted" in rows["pi-b"]  # the rollout stopped after the failed batch
    for dev in fleet:
        assert dev.current() == ids["good2"]


def test_release_settings_fall_back_to_defaults_only_with_a_reason():
    """A release built for a profile this device cannot read runs with the default [release]
    settings — and says so (in the flash record and the verify step), never silently."""
    from edge.deploy import _release_spec
    from edge.profile import ReleaseSpec, load_profile

    spec, why = _release_spec("rpi5")
    assert why == "" and spec == load_profile("rpi5").release
    spec, why = _release_spec("no_such_board")
    assert spec == ReleaseSpec() and "no_such_board" in why
