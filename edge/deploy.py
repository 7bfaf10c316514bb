"""One flash, on the device: install → self-test → bench against the active release → switch →
restart → health, and back to the previous release on any failure (``edge release deploy``).

This is what ``edge-export flash`` runs over SSH and what each host of an Ansible rollout runs:
the whole procedure lives on the device, under the release store's lock, so that a dropped
connection or a killed workstation cannot stop it half-way. It ignores SIGHUP and keeps going when
its output can no longer be written (the workstation went away): it either completes the flash,
or puts ``current`` back, and always writes its JSON record under ``/var/lib/edgesight/flash``.

The self-test and the benchmarks run as child processes (``edge selftest``, ``edge bench``) on
the device's own runtime: a runtime that crashes takes down the check, not the procedure that
must roll back.

Outcomes: ``flashed``; ``unchanged`` (the release is already active); ``refused`` (it failed
verification, its self-test or the bench comparison before ``current`` moved: nothing changed but
the upload being discarded); ``rolled back`` (it was switched to, then the restart or the health
check failed and ``current`` went back).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edge.digest import sha256_file
from edge.errors import EdgeError
from edge.release import device_path
from edge.release_store import ReleaseStore

log = logging.getLogger(__name__)

__all__ = ["DeployOptions", "BenchSettings", "deploy", "wait_health", "compare_by_role", "DEFAULT_RECORD_DIR",
           "RECORD_MARK", "FLASHED", "UNCHANGED", "REFUSED", "ROLLED_BACK"]

DEFAULT_RECORD_DIR = Path("/var/lib/edgesight/flash")
#: Prefix of the one line carrying the JSON record (``--record-line``) for the workstation to read.
RECORD_MARK = "edgesight-flash-record "
FLASHED, UNCHANGED, REFUSED, ROLLED_BACK = "flashed", "unchanged", "refused", "rolled back"
#: An unexpected failure inside the procedure itself (the record says where; `current` names a
#: verified release either way).
ERROR = "error"
_CHUNK = 1 << 20
#: A 'slower' verdict whose p50 difference is below this many noise bands is measured once more.
CONFIRM_BAND = 2.0


@dataclass(frozen=True)
class BenchSettings:
    """``edge bench`` options of the regression check (short: a flash should take seconds)."""

    iters: int = 50
    warmup: int = 5
    processes: int = 2
    threads: int | None = None
    confirm: bool = True  # a borderline 'slower' verdict is measured once more before the release is refused


@dataclass(frozen=True)
class DeployOptions:
    archive: str  # a .tar.gz, a bundle directory, or "-" for stdin
    trust: Path
    sha256: str | None = None  # of the upload, checked before anything is unpacked
    allow_slower: bool = False
    restart_cmd: str | None = None  # default: systemctl restart <profile [release] service>
    health_url: str | None = None  # default: the profile's; "" skips the health check
    health_timeout_s: float | None = None
    keep: int | None = None
    bench: BenchSettings = field(default_factory=BenchSettings)
    record_dir: Path | None = None
    lock_timeout_s: float = 120.0
    max_upload_bytes: int = 1 << 30


class _Say:
    """One line per step; keeps going (silently) once nobody reads the output any more."""

    def __init__(self, out: Callable[[str], None]) -> None:
        self.out, self.detached = out, False

    def __call__(self, line: str) -> None:
        if self.detached:
            return
        try:
            self.out(line)
        except (OSError, ValueError):  # EPIPE / closed stream: the workstation is gone, the flash is not
            self.detached = True


class _Flash:
    def __init__(self, opts: DeployOptions, store: ReleaseStore, say: _Say) -> None:
        self.opts, self.store, self.say = opts, store, say
        self.t0 = time.monotonic()
        self.record: dict = {"host": socket.gethostname(), "started": _utc(), "outcome": None, "release": None,
                             "previous": None, "failed_step": None, "reason": None, "rolled_back": False,
                             "allow_slower": opts.allow_slower, "steps": [], "selftest": None, "bench": None}
        self.new: str | None = None
        self.prev: str | None = None
        self.spec = None

    # -- helpers -----------------------------------------------------------------------------------
    def step(self, name: str, ok: bool, detail: str, t_start: float, **extra) -> None:
        secs = time.monotonic() - t_start
        self.record["steps"].append({"step": name, "ok": ok, "detail": detail, "seconds": round(secs, 3), **extra})
        self.say(f"{name:<9} {'ok' if ok else 'FAIL':<4} {detail} ({secs:.1f} s)")

    def fail(self, name: str, reason: str, outcome: str) -> None:
        self.record.update(failed_step=name, reason=reason, outcome=outcome)

    # -- steps ---------------------------------------------------------------------------------------
    def receive(self) -> Path:
        """The archive on the device: stdin copied into the store (bounded, hashed), or the path given."""
        t = time.monotonic()
        if self.opts.archive != "-":
            src = Path(self.opts.archive)
            if not src.exists():
                raise FileNotFoundError(f"bundle not found: {src}")
            checked = bool(self.opts.sha256 and src.is_file())
            if checked and sha256_file(src) != self.opts.sha256.lower():
                raise EdgeError(f"{src}: sha256 differs from --sha256 (incomplete or altered copy)")
            size = src.stat().st_size if src.is_file() else 0
            self.step("receive", True, f"{src}" + (f", {size / 1e6:.1f} MB, sha256 checked" if checked else ""), t)
            return src
        dst = self.store.incoming_file()
        h, n = hashlib.sha256(), 0
        with open(dst, "wb") as f:
            while block := sys.stdin.buffer.read(_CHUNK):
                n += len(block)
                if n > self.opts.max_upload_bytes:
                    raise EdgeError(f"upload larger than {self.opts.max_upload_bytes} bytes: refused")
                h.update(block)
                f.write(block)
        if self.opts.sha256 and h.hexdigest() != self.opts.sha256.lower():
            raise EdgeError(f"upload incomplete or altered: {n} bytes received, sha256 {h.hexdigest()[:12]}… "
                            f"differs from {self.opts.sha256[:12]}…")
        self.step("receive", True, f"{n / 1e6:.1f} MB, sha256 {'checked' if self.opts.sha256 else 'not given'}", t)
        return dst

    def install(self, archive: Path) -> bool:
        t = time.monotonic()
        try:
            rid, info, already = self.store.install(archive, self.opts.trust)
        except EdgeError as e:
            self.step("verify", False, str(e), t)
            self.fail("verify", str(e), REFUSED)
            return False
        self.new = self.record["release"] = rid
        self.record.update(profile=info.profile, created=info.created, key_id=info.key_id,
                           files=info.files, bytes=info.total_bytes)
        self.spec, why_default = _release_spec(info.profile)
        if why_default:  # said in the record and the step: the release's own settings are not in force
            self.record["release_settings"] = f"defaults ({why_default})"
        self.step("verify", True, f"{rid}: signature ok (key {info.key_id}), {info.files} files sha256 ok"
                                  f"{f'; [release] settings: defaults ({why_default})' if why_default else ''}"
                                  f"{' (already installed)' if already else ''}", t)
        return True

    def selftest(self) -> bool:
        t = time.monotonic()
        path = self.store.path(self.new)
        proc = _edge(["selftest", "--bundle", str(path), "--trust", str(self.opts.trust), "--json"], timeout=900)
        doc = _last_json(proc.stdout)
        checks = (doc or {}).get("checks") or []
        failed = [c for c in checks if not c.get("passed")]
        worst: dict = {}  # one line per model output (each golden input is a check)
        for c in failed:
            k = (c.get("role"), c.get("model"), c.get("output"))
            if k not in worst or c.get("value", 0) > worst[k].get("value", 0):
                worst[k] = c
        ok = proc.returncode == 0 and bool(doc and doc.get("passed"))
        self.record["selftest"] = {"passed": ok, "checks": len(checks), "failed": len(failed), "exit": proc.returncode,
                                   "failures": [{k: c.get(k) for k in ("role", "model", "output", "metric", "value",
                                                                         "limit")} for c in failed]}
        if ok:
            self.step("selftest", True, f"{len(checks)}/{len(checks)} golden checks within tolerance", t)
            return True
        if failed:
            why = "; ".join(f"{c['role']} {c['model']} {c['output']}: {c['metric']} {c['value']:.2e} > {c['limit']:.0e}"
                            for c in list(worst.values())[:3])
        else:
            why = (doc or {}).get("error") or _tail(proc.stderr) or f"edge selftest exited {proc.returncode}"
        self.step("selftest", False, f"{len(failed)}/{len(checks)} checks failed: {why}", t)
        self.fail("selftest", why, REFUSED)
        return False

    def _bench(self, rid: str, out: Path) -> dict:
        b = self.opts.bench
        args = ["bench", "--bundle", str(self.store.path(rid)), "--trust", str(self.opts.trust), "--iters", str(b.iters),
                "--warmup", str(b.warmup), "--processes", str(b.processes), "--format", "json", "--out", str(out)]
        if b.threads is not None:
            args += ["--threads", str(b.threads)]
        proc = _edge(args, timeout=1800)
        report = out / "bench.json"
        if proc.returncode != 0 or not report.is_file():
            raise EdgeError(f"edge bench of {rid} failed (exit {proc.returncode}): {_tail(proc.stderr)}")
        from edge.bench.report import load_report

        return load_report(report)

    def bench(self, work: Path) -> bool:
        t = time.monotonic()
        if self.prev is None:
            new = self._bench(self.new, work / "new-0")
            figures = {k: r["latency_ms"]["p50"] for k, r in _by_role(new, self.store.path(self.new)).items()
                       if r.get("latency_ms")}
            self.record["bench"] = {"verdict": "no previous release", "new_p50_ms": figures}
            self.step("bench", True, "no previous release to compare with; " +
                      ", ".join(f"{k} p50 {v:.2f} ms" for k, v in figures.items()), t)
            return True
        pdir, ndir = self.store.path(self.prev), self.store.path(self.new)
        # a role whose model and card are byte-identical in both releases cannot have regressed: its
        # difference is the machine's noise, shown but not judged
        same = {k for k, v in _model_digests(ndir).items() if _model_digests(pdir).get(k) == v}
        rounds = []
        for i in range(2 if self.opts.bench.confirm else 1):
            order = [("prev", self.prev), ("new", self.new)]
            reports = {name: self._bench(rid, work / f"{name}-{i}") for name, rid in (order if i == 0 else order[::-1])}
            rows = compare_by_role(reports["prev"], pdir, reports["new"], ndir)
            rounds.append(rows)
            # measured again (in the other order) only when a judged 'slower' is borderline, within
            # twice the noise band: a clear regression needs no second opinion, a marginal one may be
            # the machine (a burst of load lands on whichever release is measured second)
            if not any(r.verdict == "slower" and _role(r) not in same and r.delta_p50_ms < CONFIRM_BAND * r.noise_ms
                       for r in rows):
                break
        final = rounds[-1]
        judged = [r for r in final if _role(r) not in same]
        slower = [r for r in judged if r.verdict == "slower"]
        verdict = "slower" if slower else ("faster" if any(r.verdict == "faster" for r in judged) else "no change")
        self.record["bench"] = {"verdict": verdict, "rounds": len(rounds), "unchanged_models": sorted(same),
                                "comparisons": [[r.to_dict() for r in rows] for rows in rounds]}
        detail = "; ".join(_describe(r) + (" (same model: not judged)" if _role(r) in same else "") for r in final)
        if len(rounds) > 1:
            detail += f" (borderline in the first run, measured again: {'confirmed' if slower else 'not confirmed'})"
        if not slower:
            self.step("bench", True, detail, t)
            return True
        if self.opts.allow_slower:
            self.step("bench", True, f"{detail}; SLOWER than {self.prev}, flashed anyway (--allow-slower)", t)
            return True
        self.step("bench", False, f"{detail}; slower than {self.prev} beyond noise (--allow-slower overrides)", t)
        self.fail("bench", f"slower than {self.prev}: " + ", ".join(_describe(r) for r in slower), REFUSED)
        return False

    def activate(self) -> None:
        t = time.monotonic()
        self.store.activate(self.new, self.opts.trust)
        self.step("activate", True, f"current -> {self.new}" + (f" (previous {self.prev})" if self.prev else ""), t)

    def restart(self, for_id: str | None) -> bool:
        t = time.monotonic()
        cmd = self.opts.restart_cmd if self.opts.restart_cmd is not None else f"systemctl restart {self.spec.service}"
        if not cmd:
            self.step("restart", True, "skipped (no restart command)", t)
            return True
        try:
            proc = subprocess.run(shlex.split(cmd), capture_output=True, text=True, timeout=300,
                                  stdin=subprocess.DEVNULL)
            ok, why = proc.returncode == 0, f"exit {proc.returncode}: {_tail(proc.stderr or proc.stdout)}"
        except (OSError, subprocess.TimeoutExpired) as e:
            ok, why = False, str(e)
        self.step("restart", ok, cmd if ok else f"{cmd}: {why}", t, release=for_id)
        if not ok and self.record["failed_step"] is None:
            self.fail("restart", f"{cmd}: {why}", ROLLED_BACK)
        return ok

    def health(self, want: str) -> bool:
        t = time.monotonic()
        url = self.opts.health_url if self.opts.health_url is not None else self.spec.health_url
        if not url:
            self.step("health", True, "skipped (no health URL)", t)
            return True
        timeout = self.opts.health_timeout_s or self.spec.health_timeout_s
        ok, seen = wait_health(url, want, timeout)
        detail = (f"{url} reports {want}" if ok else
                  f"{url} did not report {want} within {timeout:.0f} s (last answer: {seen})")
        self.step("health", ok, detail, t, release=want)
        if not ok and self.record["failed_step"] is None:
            self.fail("health", detail, ROLLED_BACK)
        return ok

    def roll_back(self) -> None:
        t = time.monotonic()
        if self.prev is not None:
            self.store.activate(self.prev, self.opts.trust)
            self.store.remove(self.new)
            self.step("rollback", True, f"current -> {self.prev}; {self.new} removed", t)
        else:
            self.store.deactivate()
            self.store.remove(self.new)
            self.step("rollback", True, f"no previous release: current removed; {self.new} removed", t)
        self.record["rolled_back"] = True
        if self.restart(self.prev) and self.prev is not None:
            self.health(self.prev)

    def discard(self) -> None:
        if self.new is not None and self.new != self.store.current():
            self.store.remove(self.new)
            self.say(f"{'discard':<9} ok   {self.new} removed; current stays {self.prev or '(none)'}")

    def prune(self) -> None:
        t = time.monotonic()
        keep = self.opts.keep or self.spec.keep
        removed = self.store.prune(keep)
        self.record["removed"] = removed
        self.step("keep", True, f"last {keep} kept" + (f", removed {', '.join(removed)}" if removed else ""), t)

    # -- the procedure ------------------------------------------------------------------------------
    def run(self) -> dict:
        try:
            return self._run()
        except Exception as e:  # noqa: BLE001 - recorded, then raised to the CLI
            if self.record["outcome"] is None:
                self.fail(self.record["steps"][-1]["step"] if self.record["steps"] else "start",
                          f"{type(e).__name__}: {e}", ERROR)
                try:
                    self.finish()
                except Exception:  # noqa: BLE001 - the original error matters more
                    pass
            raise

    def _run(self) -> dict:
        archive = None
        try:
            with self.store.lock(self.opts.lock_timeout_s):
                self.prev = self.record["previous"] = self.store.current()
                try:
                    archive = self.receive()
                except EdgeError as e:
                    self.step("receive", False, str(e), self.t0)
                    self.fail("receive", str(e), REFUSED)
                    return self.finish()
                if not self.install(archive):
                    return self.finish()
                if self.new == self.prev:
                    self.record["outcome"] = UNCHANGED
                    self.say(f"{'activate':<9} ok   {self.new} is already the active release: nothing to do")
                    return self.finish()
                with tempfile.TemporaryDirectory(prefix="edgesight-flash-") as work:
                    try:
                        passed = self.selftest() and self.bench(Path(work))
                    except (EdgeError, subprocess.TimeoutExpired) as e:
                        self.step("bench", False, str(e), self.t0)
                        self.fail("bench", str(e), REFUSED)
                        passed = False
                if not passed:
                    self.discard()
                    return self.finish()
                self.activate()
                try:
                    healthy = self.restart(self.new) and self.health(self.new)
                except Exception as e:  # noqa: BLE001 - whatever went wrong, current must go back
                    self.step("health", False, f"{type(e).__name__}: {e}", self.t0)
                    self.fail("health", f"{type(e).__name__}: {e}", ROLLED_BACK)
                    healthy = False
                if not healthy:
                    self.roll_back()
                    self.record["outcome"] = ROLLED_BACK
                    return self.finish()
                self.record["outcome"] = FLASHED
                self.prune()
                return self.finish()
        finally:
            if archive is not None and self.opts.archive == "-":
                archive.unlink(missing_ok=True)

    def finish(self) -> dict:
        r = self.record
        r["finished"] = _utc()
        r["seconds"] = round(time.monotonic() - self.t0, 3)
        r["current"] = self.store.current()
        self.write_record()
        what = {FLASHED: f"{self.new} is active", UNCHANGED: f"{self.new} was already active",
                REFUSED: f"current stays {r['current'] or '(none)'}",
                ROLLED_BACK: f"current is back on {r['current'] or '(none)'}",
                ERROR: f"current is {r['current'] or '(none)'}"}[r["outcome"]]
        why = f" ({r['failed_step']}: {r['reason']})" if r["failed_step"] else ""
        self.say(f"outcome   {r['outcome']}: {what}{why} in {r['seconds']:.1f} s; record {r.get('record_file')}")
        return r

    def write_record(self) -> None:
        d = self.opts.record_dir or device_path(DEFAULT_RECORD_DIR)
        d.mkdir(parents=True, exist_ok=True)
        name = f"{self.record['started'].replace(':', '')}-{self.new or 'unverified'}.json"
        self.record["record_file"] = str(d / name)
        data = json.dumps(self.record, indent=1, default=str)
        for target in (d / name, d / "last.json"):
            tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
            tmp.write_text(data)
            os.replace(tmp, target)


def deploy(opts: DeployOptions, store: ReleaseStore | None = None, out: Callable[[str], None] | None = None) -> dict:
    """Run one flash on this device (see the module docstring). Returns the JSON record.

    Raises:
        StoreBusyError: another flash holds the lock (nothing was done).
    """
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the connection dropping must not stop a flash half-way
    say = _Say(out or (lambda line: print(line, flush=True)))
    return _Flash(opts, store or ReleaseStore(), say).run()


# -- health ---------------------------------------------------------------------------------------

def wait_health(url: str, release: str, timeout_s: float, interval_s: float = 0.25) -> tuple[bool, str]:
    """Poll ``url`` until its JSON says ``"release": release`` (and ``status`` ok). Returns (ok, last answer)."""
    deadline = time.monotonic() + timeout_s
    seen = "no answer"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                doc = json.loads(resp.read().decode("utf-8", "replace"))
            seen = f"status {doc.get('status')!r}, release {doc.get('release')!r}"
            if doc.get("release") == release and doc.get("status") == "ok":
                return True, seen
        except (OSError, ValueError, http.client.HTTPException) as e:  # URLError is an OSError
            seen = f"no answer ({getattr(e, 'reason', None) or e!r})"
        if time.monotonic() >= deadline:
            return False, seen
        time.sleep(interval_s)


# -- bench comparison by role -----------------------------------------------------------------------

def _role_names(bundle_dir: Path) -> dict[str, str]:
    """Card name / model stem → ``role`` (``role[i]`` for a role with several models)."""
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    out = {}
    for role, entries in manifest.get("roles", {}).items():
        for i, e in enumerate(entries):
            key = role if len(entries) == 1 else f"{role}[{i}]"
            out[e.get("name")] = key
            out[Path(e["model"]).stem] = key
    return out


def _by_role(report: dict, bundle_dir: Path) -> dict[str, dict]:
    names = _role_names(bundle_dir)
    return {names.get(r.get("variant"), r.get("variant")): r for r in report["results"]
            if r.get("status") != "skipped"}


def compare_by_role(prev: dict, prev_dir: Path, new: dict, new_dir: Path):
    """:func:`edge.bench.compare.compare_reports` with results matched by role (the models of two
    releases may have other names), backend and threads."""
    from edge.bench.compare import compare_reports

    def rekey(report, d):
        return {**report, "results": [{**r, "variant": k} for k, r in _by_role(report, d).items()]}

    return compare_reports(rekey(prev, prev_dir), rekey(new, new_dir))


def _role(c) -> str:
    return c.key.split(" | ")[0]


def _model_digests(bundle_dir: Path) -> dict[str, tuple]:
    """Role key → (model sha256, card sha256) from a verified release's manifest."""
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    files = manifest.get("files", {})
    out = {}
    for role, entries in manifest.get("roles", {}).items():
        for i, e in enumerate(entries):
            key = role if len(entries) == 1 else f"{role}[{i}]"
            out[key] = ((files.get(e["model"]) or {}).get("sha256"), (files.get(e["card"]) or {}).get("sha256"))
    return out


def _describe(c) -> str:
    role = _role(c)
    if c.a_p50 is None or c.b_p50 is None:
        return f"{role} {c.verdict}"
    return f"{role} p50 {c.a_p50:.2f} -> {c.b_p50:.2f} ms ({c.delta_p50_pct:+.1f}%, noise ±{c.noise_ms:.2f}) {c.verdict}"


# -- small helpers -------------------------------------------------------------------------------------

def _release_spec(profile_name: str):
    """``(the [release] settings of the profile the release was built for, why defaults are used or "")``."""
    from edge.errors import ProfileError
    from edge.profile import ReleaseSpec, load_profile

    try:
        return load_profile(profile_name).release, ""
    except (ProfileError, FileNotFoundError, ValueError) as e:
        log.warning("release built for profile %r: its [release] settings cannot be read here (%s); using the "
                    "defaults (keep, service, health check)", profile_name, e)
        return ReleaseSpec(), f"profile {profile_name!r} cannot be read here: {e}"


def _edge(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge", *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _last_json(text: str) -> dict | None:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _tail(text: str | None, n: int = 300) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else "")[-n:]


def _utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

