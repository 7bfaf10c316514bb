"""Device fingerprint and thermal state from fake sysfs trees and fake vcgencmd / nvpmodel executables."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from edge.bench.device import (DeviceProbe, decode_throttled, fingerprint, guess_profile_name, parse_nvpmodel,
                               thermal_snapshot)

PI_CPUINFO = "".join(f"processor\t: {i}\nBogoMIPS\t: 108.00\nCPU implementer\t: 0x41\nCPU architecture: 8\n"
                     f"CPU part\t: 0xd08\n\n" for i in range(4)) + "Hardware\t: BCM2835\nModel\t: Raspberry Pi 4 Model B Rev 1.4\n"


def _write(root: Path, rel: str, text: str | bytes) -> None:
    p = root / rel.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(text if isinstance(text, bytes) else text.encode())


def _command(bindir: Path, name: str, script: str) -> None:
    bindir.mkdir(parents=True, exist_ok=True)
    p = bindir / name
    p.write_text("#!/bin/sh\n" + script)
    p.chmod(p.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture()
def pi4(tmp_path) -> DeviceProbe:
    root = tmp_path / "root"
    _write(root, "/proc/device-tree/model", b"Raspberry Pi 4 Model B Rev 1.4\x00")
    _write(root, "/proc/cpuinfo", PI_CPUINFO)
    _write(root, "/proc/sys/kernel/osrelease", "6.6.31+rpt-rpi-v8\n")
    _write(root, "/sys/devices/system/cpu/online", "0-3\n")
    _write(root, "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor", "ondemand\n")
    _write(root, "/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq", "600000\n")
    _write(root, "/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq", "1800000\n")
    _write(root, "/sys/class/thermal/thermal_zone0/type", "cpu-thermal\n")
    _write(root, "/sys/class/thermal/thermal_zone0/temp", "48312\n")
    _write(root, "/etc/os-release", 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n')
    _command(tmp_path / "bin", "vcgencmd", 'case "$1" in\n'
             '  get_throttled) echo "throttled=0x50005" ;;\n'
             '  measure_clock) echo "frequency(48)=1500398464" ;;\n'
             '  *) exit 1 ;;\nesac\n')
    return DeviceProbe(root=root, path=str(tmp_path / "bin"))


@pytest.fixture()
def jetson(tmp_path) -> DeviceProbe:
    root = tmp_path / "root"
    _write(root, "/proc/device-tree/model", b"NVIDIA Jetson Nano Developer Kit\x00")
    _write(root, "/proc/cpuinfo", "".join(f"processor\t: {i}\nCPU architecture: 8\nCPU part\t: 0xd07\n\n"
                                          for i in range(4)))
    _write(root, "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor", "schedutil\n")
    zones = [("AO-therm", 35500), ("CPU-therm", 41500), ("GPU-therm", 39000), ("PLL-therm", 38250),
             ("PMIC-Die", 100000), ("thermal-fan-est", 40100)]
    for i, (kind, milli) in enumerate(zones):
        _write(root, f"/sys/devices/virtual/thermal/thermal_zone{i}/type", kind + "\n")
        _write(root, f"/sys/devices/virtual/thermal/thermal_zone{i}/temp", f"{milli}\n")
        # /sys/class/thermal/thermal_zoneN are symlinks to the virtual devices on a real Jetson
        link = root / f"sys/class/thermal/thermal_zone{i}"
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(root / f"sys/devices/virtual/thermal/thermal_zone{i}")
    _write(root, "/etc/nv_tegra_release", "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref\n")
    _command(tmp_path / "bin", "nvpmodel", 'if [ "$1" = "-q" ]; then printf "NV Power Mode: MAXN\\n0\\n"; '
             'else exit 1; fi\n')
    return DeviceProbe(root=root, path=str(tmp_path / "bin"))


def test_raspberry_pi_4_fingerprint(pi4):
    fp = fingerprint(pi4)
    assert fp["board"] == "Raspberry Pi 4 Model B Rev 1.4" and fp["board_source"] == "device-tree"
    assert fp["cpu_model"] == "Cortex-A72"
    assert (fp["cores"], fp["arch"], fp["governor"]) == (4, "aarch64", "ondemand")
    assert fp["cpu_max_mhz"] == 1800.0
    assert fp["os"] == "Debian GNU/Linux 12 (bookworm)" and fp["kernel"] == "6.6.31+rpt-rpi-v8"
    assert "nvpmodel" not in fp
    assert guess_profile_name(fp) == "rpi4"


def test_raspberry_pi_4_thermals_and_throttling(pi4):
    snap = thermal_snapshot(pi4)
    assert snap["cpu_temp_c"] == pytest.approx(48.312)
    assert snap["zones"] == [{"zone": "thermal_zone0", "type": "cpu-thermal", "temp_c": pytest.approx(48.312)}]
    t = snap["throttled"]
    assert t["raw"] == "0x50005"
    assert t["flags"] == ["under_voltage", "throttled", "under_voltage_occurred", "throttling_occurred"]
    assert t["under_voltage"] and t["throttled"] and t["now"] and t["since_boot"]
    assert not t["arm_frequency_capped"] and not t["soft_temperature_limit"]
    assert snap["cpu_mhz"] == pytest.approx(1500.398464)  # vcgencmd measure_clock arm wins over cpufreq
    assert "nvpmodel" not in snap


def test_jetson_fingerprint_and_thermals(jetson):
    fp = fingerprint(jetson)
    assert fp["board"] == "NVIDIA Jetson Nano Developer Kit"
    assert (fp["cpu_model"], fp["cores"], fp["governor"]) == ("Cortex-A57", 4, "schedutil")
    assert fp["nvpmodel"] == {"mode": "MAXN", "id": 0}
    assert fp["l4t"].startswith("# R32 (release), REVISION: 7.1")
    assert guess_profile_name(fp) == "jetson_nano"
    snap = thermal_snapshot(jetson)
    assert snap["cpu_temp_c"] == pytest.approx(41.5)  # the CPU-therm zone, not zone 0
    assert [z["type"] for z in snap["zones"]][:3] == ["AO-therm", "CPU-therm", "GPU-therm"]
    assert snap["nvpmodel"] == {"mode": "MAXN", "id": 0}
    assert "throttled" not in snap


def test_profile_zone_paths_are_read_when_given(jetson):
    snap = thermal_snapshot(jetson, zones=["/sys/devices/virtual/thermal/thermal_zone2/temp"])
    assert snap["zones"] == [{"zone": "thermal_zone2", "type": "GPU-therm", "temp_c": pytest.approx(39.0)}]
    missing = thermal_snapshot(jetson, zones=["/sys/class/thermal/thermal_zone99/temp"])
    assert len(missing["zones"]) == 6  # a profile path that is not there falls back to every zone


def test_x86_board_from_dmi(tmp_path):
    root = tmp_path / "root"
    _write(root, "/sys/class/dmi/id/sys_vendor", "Dell Inc.\n")
    _write(root, "/sys/class/dmi/id/product_name", "XPS 13 9310\n")
    _write(root, "/proc/cpuinfo", "processor\t: 0\nmodel name\t: 11th Gen Intel(R) Core(TM) i7-1185G7\n\n"
                                  "processor\t: 1\nmodel name\t: 11th Gen Intel(R) Core(TM) i7-1185G7\n")
    _write(root, "/sys/class/thermal/thermal_zone0/type", "acpitz\n")
    _write(root, "/sys/class/thermal/thermal_zone0/temp", "27800\n")
    _write(root, "/sys/class/thermal/thermal_zone1/type", "x86_pkg_temp\n")
    _write(root, "/sys/class/thermal/thermal_zone1/temp", "55000\n")
    probe = DeviceProbe(root=root, path=str(tmp_path / "empty-bin"))
    fp = fingerprint(probe)
    assert (fp["board"], fp["board_source"]) == ("Dell Inc. XPS 13 9310", "dmi")
    assert fp["cpu_model"] == "11th Gen Intel(R) Core(TM) i7-1185G7" and fp["cores"] == 2
    assert thermal_snapshot(probe)["cpu_temp_c"] == pytest.approx(55.0)


def test_empty_tree_gives_nones_not_errors(tmp_path):
    probe = DeviceProbe(root=tmp_path, path=str(tmp_path))
    fp = fingerprint(probe)
    assert fp["board"] is None and fp["governor"] is None and fp["cores"] is None
    assert fp["python"] and "python" in fp["versions"]
    snap = thermal_snapshot(probe)
    assert snap["zones"] == [] and snap["cpu_temp_c"] is None and "throttled" not in snap


def test_failing_or_garbage_commands_are_ignored(tmp_path):
    bindir = tmp_path / "bin"
    _command(bindir, "vcgencmd", 'echo "VCHI initialization failed" >&2; exit 255\n')
    _command(bindir, "nvpmodel", 'echo "no power mode here"\n')
    probe = DeviceProbe(root=tmp_path / "root", path=str(bindir))
    snap = thermal_snapshot(probe)
    assert "throttled" not in snap and "nvpmodel" not in snap


@pytest.mark.parametrize("value, flags, now, since_boot", [
    (0, [], False, False),
    ("throttled=0x0", [], False, False),
    ("throttled=0x50005", ["under_voltage", "throttled", "under_voltage_occurred", "throttling_occurred"], True, True),
    (0x80008, ["soft_temperature_limit", "soft_temperature_limit_occurred"], True, True),
    ("throttled=0x20000", ["arm_frequency_capping_occurred"], False, True),
    ("throttled=0x2", ["arm_frequency_capped"], True, False),
])
def test_decode_throttled(value, flags, now, since_boot):
    d = decode_throttled(value)
    assert d["flags"] == flags and d["now"] is now and d["since_boot"] is since_boot


def test_decode_throttled_refuses_garbage():
    with pytest.raises(ValueError, match="throttled"):
        decode_throttled("throttled=banana")


@pytest.mark.parametrize("text, expected", [
    ("NV Power Mode: MAXN\n0", {"mode": "MAXN", "id": 0}),
    ("NV Power Mode: 5W\n1\n", {"mode": "5W", "id": 1}),
    ("NV Power Mode: MODE_15W_2CORE", {"mode": "MODE_15W_2CORE", "id": None}),
    ("something else", None),
    ("", None),
])
def test_parse_nvpmodel(text, expected):
    assert parse_nvpmodel(text) == expected


@pytest.mark.parametrize("fp, name", [
    ({"board": "Raspberry Pi 5 Model B Rev 1.0", "arch": "aarch64"}, "rpi5"),
    ({"board": "Raspberry Pi 4 Model B Rev 1.1", "arch": "aarch64"}, "rpi4"),
    ({"board": "NVIDIA Jetson Nano Developer Kit", "arch": "aarch64"}, "jetson_nano"),
    ({"board": None, "arch": "x86_64"}, "x86_dev"),
    ({"board": "Radxa ROCK 5B", "arch": "aarch64"}, None),
])
def test_guess_profile_name(fp, name):
    assert guess_profile_name(fp) == name


def test_this_machine_fingerprint_has_the_basics():
    fp = fingerprint()
    assert fp["cores"] >= 1 and fp["python"] and fp["arch"]
    assert "numpy" in fp["versions"]
    snap = thermal_snapshot()
    assert isinstance(snap["zones"], list) and snap["time"] > 0
