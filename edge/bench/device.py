"""Device context for benchmark reports: a fingerprint of the board and its thermal state.

Every file and command goes through a :class:`DeviceProbe` whose root directory and ``PATH``
are injectable, so tests run the same code against fake sysfs trees and fake ``vcgencmd`` /
``nvpmodel`` executables. Nothing here fails when a file or command is absent: a laptop, a
container and a board all get a fingerprint, with ``None`` where there is nothing to read.

Sources (all read-only):

- board: ``/proc/device-tree/model`` (Raspberry Pi, Jetson and other device-tree boards), else
  DMI ``/sys/class/dmi/id/{sys_vendor,product_name}`` (x86);
- CPU: ``/proc/cpuinfo`` (``model name``, or the ARM ``CPU part`` decoded to a core name),
  ``/sys/devices/system/cpu/online`` and the cpufreq governor of cpu0;
- temperatures: ``/sys/class/thermal/thermal_zone*/{type,temp}`` (millidegrees Celsius);
- Raspberry Pi: ``vcgencmd get_throttled`` (bit meanings from the Raspberry Pi documentation,
  "vcgencmd" page) and ``vcgencmd measure_clock arm``;
- Jetson: ``nvpmodel -q`` (power mode name and id) and ``/etc/nv_tegra_release``.

Example:
    >>> probe = DeviceProbe()
    >>> fp = fingerprint(probe)
    >>> snap = thermal_snapshot(probe)         # before and after a run
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

__all__ = ["DeviceProbe", "fingerprint", "thermal_snapshot", "decode_throttled", "parse_nvpmodel",
           "guess_profile_name", "THROTTLED_BITS", "RUNTIME_DISTRIBUTIONS"]

#: ``vcgencmd get_throttled`` bits (Raspberry Pi documentation, "vcgencmd" → get_throttled).
THROTTLED_BITS = {
    0: "under_voltage", 1: "arm_frequency_capped", 2: "throttled", 3: "soft_temperature_limit",
    16: "under_voltage_occurred", 17: "arm_frequency_capping_occurred", 18: "throttling_occurred",
    19: "soft_temperature_limit_occurred",
}
#: ARM ``CPU part`` ids of /proc/cpuinfo (implementer 0x41) → core names, for boards whose
#: cpuinfo has no ``model name`` line.
ARM_PARTS = {"0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
             "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
             "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd41": "Cortex-A78", "0xd42": "Cortex-A78AE"}
#: /proc/cpuinfo ``CPU architecture`` → machine name (what ``uname -m`` says on such a board).
ARM_ARCHITECTURES = {"8": "aarch64", "7": "armv7l"}
#: Thermal-zone ``type`` values that measure the CPU (Pi, Jetson, x86, Rockchip/Amlogic SoCs).
CPU_ZONE_TYPES = ("cpu-thermal", "cpu_thermal", "CPU-therm", "x86_pkg_temp", "soc_thermal", "soc-thermal",
                  "cpu0-thermal", "cpu")
#: Distributions whose versions go into the fingerprint (looked up without importing them).
RUNTIME_DISTRIBUTIONS = ("edgesight", "numpy", "onnxruntime", "onnxruntime-gpu", "ai-edge-litert",
                         "tflite-runtime", "opencv-python-headless", "opencv-python", "opencv-contrib-python")
MILLI = 1000.0
COMMAND_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class DeviceProbe:
    """Where device facts are read from.

    Args:
        root: filesystem root that ``/proc``, ``/sys`` and ``/etc`` are read under.
        path: ``PATH`` searched for ``vcgencmd`` / ``nvpmodel`` (``None``: the process's).
        timeout_s: how long a command may take.
    """

    root: Path = Path("/")
    path: str | None = None
    timeout_s: float = COMMAND_TIMEOUT_S

    @property
    def is_host(self) -> bool:
        return Path(self.root).resolve() == Path("/")

    def file(self, absolute: str) -> Path:
        return Path(self.root) / absolute.lstrip("/")

    def read(self, absolute: str) -> str | None:
        try:
            return self.file(absolute).read_bytes().decode("utf-8", "replace").replace("\x00", "").strip()
        except OSError:
            return None

    def glob(self, pattern: str) -> list[Path]:
        return sorted(Path(self.root).glob(pattern.lstrip("/")))

    def run(self, *cmd: str) -> str | None:
        """stdout of a command found on :attr:`path`, or None when absent or failing."""
        search = self.path if self.path is not None else os.environ.get("PATH", "")
        exe = shutil.which(cmd[0], path=search)
        if exe is None:
            return None
        env = dict(os.environ, PATH=search)
        try:
            proc = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, timeout=self.timeout_s, env=env)
        except (OSError, subprocess.SubprocessError):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None


def _board(probe: DeviceProbe) -> tuple[str | None, str | None]:
    model = probe.read("/proc/device-tree/model")
    if model:
        return model, "device-tree"
    vendor, product = probe.read("/sys/class/dmi/id/sys_vendor"), probe.read("/sys/class/dmi/id/product_name")
    if vendor or product:
        return " ".join(x for x in (vendor, product) if x), "dmi"
    return None, None


def _cpuinfo(probe: DeviceProbe) -> dict[str, str]:
    text = probe.read("/proc/cpuinfo") or ""
    info: dict[str, str] = {}
    processors = 0
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "processor":
            processors += 1
        info.setdefault(key, value)
    if processors:
        info["_processors"] = str(processors)
    return info


def _cpu_model(info: dict[str, str]) -> str | None:
    if info.get("model name"):
        return info["model name"]
    part = info.get("CPU part", "").lower()
    if part in ARM_PARTS:
        return ARM_PARTS[part]
    return info.get("Hardware") or info.get("Processor") or platform.processor() or None


def _online_cores(probe: DeviceProbe, info: dict[str, str]) -> int | None:
    text = probe.read("/sys/devices/system/cpu/online")
    if text:
        count = 0
        for part in text.split(","):
            a, _, b = part.partition("-")
            count += (int(b) - int(a) + 1) if b else 1
        return count
    if "_processors" in info:
        return int(info["_processors"])
    return os.cpu_count() if probe.is_host else None


def _os_name(probe: DeviceProbe) -> str | None:
    text = probe.read("/etc/os-release") or ""
    m = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', text, re.M)
    if m:
        return m.group(1)
    return platform.platform() if probe.is_host else None


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in RUNTIME_DISTRIBUTIONS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def parse_nvpmodel(text: str | None) -> dict | None:
    """``nvpmodel -q`` output (``NV Power Mode: MAXN`` then the mode id) → ``{"mode", "id"}``."""
    if not text:
        return None
    m = re.search(r"NV Power Mode:\s*(\S+)", text)
    if not m:
        return None
    ids = [ln.strip() for ln in text.splitlines()[1:] if ln.strip().isdigit()]
    return {"mode": m.group(1), "id": int(ids[0]) if ids else None}


def fingerprint(probe: DeviceProbe | None = None) -> dict:
    """Board, CPU, governor, OS, Python and runtime versions of the machine ``probe`` looks at."""
    probe = probe or DeviceProbe()
    board, board_source = _board(probe)
    info = _cpuinfo(probe)
    fp = {
        "board": board,
        "board_source": board_source,
        "cpu_model": _cpu_model(info),
        "arch": platform.machine() if probe.is_host else ARM_ARCHITECTURES.get(info.get("CPU architecture", "")),
        "cores": _online_cores(probe, info),
        "cores_available": len(os.sched_getaffinity(0)) if probe.is_host and hasattr(os, "sched_getaffinity")
        else None,
        "governor": probe.read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "cpu_max_mhz": _khz_to_mhz(probe.read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")),
        "os": _os_name(probe),
        "kernel": probe.read("/proc/sys/kernel/osrelease") or (platform.release() if probe.is_host else None),
        "python": sys.version.split()[0],
        "versions": _versions(),
    }
    l4t = probe.read("/etc/nv_tegra_release")
    if l4t:
        fp["l4t"] = l4t.splitlines()[0]
    power = parse_nvpmodel(probe.run("nvpmodel", "-q"))
    if power is not None:
        fp["nvpmodel"] = power
    return fp


def _khz_to_mhz(text: str | None) -> float | None:
    try:
        return int(text) / MILLI if text else None
    except ValueError:
        return None


def decode_throttled(value: int | str) -> dict:
    """Decode ``vcgencmd get_throttled`` (``"throttled=0x50005"`` or an int) into named flags.

    Returns:
        ``{"raw": "0x50005", "flags": [...], "now": bool, "since_boot": bool, <flag>: bool ...}``.
    """
    if isinstance(value, str):
        m = re.search(r"(0x[0-9a-fA-F]+|\d+)", value.partition("=")[2] or value)
        if not m:
            raise ValueError(f"cannot read a throttled value from {value!r}")
        value = int(m.group(1), 0)
    flags = [name for bit, name in THROTTLED_BITS.items() if value >> bit & 1]
    out = {"raw": hex(value), "flags": flags, "now": bool(value & 0xF), "since_boot": bool(value & 0xF0000)}
    out.update({name: name in flags for name in THROTTLED_BITS.values()})
    return out


def _zones(probe: DeviceProbe, zone_files: tuple | list | None) -> list[dict]:
    files = [probe.file(z) for z in zone_files] if zone_files else [
        d / "temp" for d in probe.glob("/sys/class/thermal/thermal_zone*")]
    out = []
    for temp_file in files:
        try:
            milli = int(temp_file.read_text().strip())
        except (OSError, ValueError):
            continue
        try:
            kind = (temp_file.parent / "type").read_text().strip()
        except OSError:
            kind = None
        out.append({"zone": temp_file.parent.name, "type": kind, "temp_c": milli / MILLI})
    return out


def _cpu_temp(zones: list[dict]) -> float | None:
    for wanted in CPU_ZONE_TYPES:
        for z in zones:
            if z["type"] and z["type"].lower() == wanted.lower():
                return z["temp_c"]
    return zones[0]["temp_c"] if zones else None


def thermal_snapshot(probe: DeviceProbe | None = None, zones: tuple | list | None = None, *,
                     vcgencmd: bool | None = None, nvpmodel: bool | None = None) -> dict:
    """Temperatures, throttling and clocks now.

    Args:
        probe: where to read.
        zones: explicit ``.../temp`` files (a profile's ``thermal.zones``); default every
            ``/sys/class/thermal/thermal_zone*``.
        vcgencmd, nvpmodel: ask these commands (a profile's ``thermal.vcgencmd`` /
            ``thermal.nvpmodel``); ``None`` asks them when they are on the path.

    Returns:
        ``{"time", "cpu_temp_c", "zones": [...], "cpu_mhz", "throttled" (Pi), "nvpmodel" (Jetson)}``.
    """
    probe = probe or DeviceProbe()
    zs = _zones(probe, zones)
    if zones and not zs:  # the profile's zone paths are not there: fall back to every zone
        zs = _zones(probe, None)
    snap = {"time": time.time(), "cpu_temp_c": _cpu_temp(zs), "zones": zs,
            "cpu_mhz": _khz_to_mhz(probe.read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq"))}
    throttled = probe.run("vcgencmd", "get_throttled") if vcgencmd is not False else None
    if throttled:
        try:
            snap["throttled"] = decode_throttled(throttled)
        except ValueError:
            snap["throttled"] = {"raw": throttled, "flags": [], "now": None, "since_boot": None}
        clock = probe.run("vcgencmd", "measure_clock", "arm")
        m = re.search(r"=(\d+)", clock or "")
        if m:
            snap["cpu_mhz"] = int(m.group(1)) / 1e6
    power = parse_nvpmodel(probe.run("nvpmodel", "-q")) if nvpmodel is not False else None
    if power is not None:
        snap["nvpmodel"] = power
    return snap


#: Board-string fragments → profile names in ``firmware_configs/``.
_PROFILE_HINTS = (("raspberry pi 5", "rpi5"), ("raspberry pi 4", "rpi4"), ("jetson nano", "jetson_nano"))


def guess_profile_name(fp: dict) -> str | None:
    """The ``firmware_configs`` profile that fits a fingerprint: by board, else ``x86_dev`` on x86_64."""
    board = (fp.get("board") or "").lower()
    for hint, name in _PROFILE_HINTS:
        if hint in board:
            return name
    if fp.get("arch") in ("x86_64", "AMD64"):
        return "x86_dev"
    return None
