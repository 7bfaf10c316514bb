"""``edge bench``: measure models (or pipelines) on this device; ``edge bench compare A.json B.json``.

Examples::

    edge bench --model yolox_nano_416 mobilenet_v2_1.0_224_quant --threads 1,2,4 --iters 200
    edge bench --bundle out/bundle --backend onnxruntime,litert --duration 30 --format json,md,png
    edge bench --pipeline detect --model yolox_nano_416 --iters 50
    edge bench compare before/bench.json after/bench.json

Ctrl-C stops after the current measurement and still writes the report (exit code 130);
a second Ctrl-C abandons the current measurement too.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from dataclasses import asdict

import msgspec
from pathlib import Path

from edge.cli import EXIT_ERROR, EXIT_FAIL, EXIT_OK
from edge.cli.argtypes import fraction, integer, number, size_wxh, threads

EXIT_INTERRUPTED = 130
#: Seconds between progress lines when stderr is not a terminal.
PLAIN_PROGRESS_INTERVAL_S = 5.0


def _csv(kind):
    def parse(text: str):
        items = [x.strip() for x in text.split(",") if x.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
        try:
            return tuple(kind(x) for x in items)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {kind.__name__}, "
                                             f"got {text!r}") from None
    return parse


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="measure latency, memory and efficiency of models on this device",
                       description="Measure load time, first inference, warm latency, throughput, peak memory "
                                   "and roofline efficiency per model variant, backend and thread count.")
    from edge.release import add_release_args

    add_release_args(p)  # --bundle: bench every model of the release (verified first)
    p.add_argument("--model", nargs="+", action="extend", metavar="NAME",
                   help="registry names, model files or card JSONs (default: every shared model found locally)")
    p.add_argument("--backend", type=_csv(str), default=None, metavar="LIST",
                   help="backends to sweep, e.g. onnxruntime,litert (default: by file suffix)")
    p.add_argument("--threads", type=_csv(threads), default=None, metavar="LIST",
                   help="thread counts to sweep, e.g. 1,2,4 (default: the profile's, else the runtime's)")
    p.add_argument("--warmup", type=integer(0, 100_000), default=10, metavar="N", help="untimed runs first (default 10)")
    p.add_argument("--processes", type=integer(1, 64), default=3, metavar="N",
                   help="fresh worker processes per variant (default 3): samples are pooled and the "
                        "spread between processes is what `compare` counts as noise")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--iters", type=integer(1, 10_000_000), default=100, metavar="N", help="timed runs per variant (default 100)")
    how.add_argument("--duration", type=number(0, low_open=True), default=None, metavar="S", help="time each variant for S seconds")
    p.add_argument("--profile", metavar="NAME|TOML",
                   help="device profile: threads, providers, peaks, thermal limit (default: $EDGE_PROFILE, else "
                        "guessed from the board)")
    p.add_argument("--calibrate", action="store_true",
                   help="measure this machine's fp32 peak with a numpy matmul instead of the profile's datasheet value")
    p.add_argument("--pipeline", choices=("unlock", "detect"), help="measure a whole pipeline per frame, by stage")
    p.add_argument("--inputs", metavar="SOURCE", help="images/video/camera to take inputs from (default: samples)")
    p.add_argument("--num-inputs", type=integer(1, 10_000), default=4, metavar="N", help="distinct input frames, cycled (default 4)")
    p.add_argument("--input-size", type=size_wxh, default=None, metavar="WxH", help="size fed to dynamic-size models")
    p.add_argument("--out", metavar="DIR", help="output directory (default: bench-YYYYmmdd-HHMMSS)")
    p.add_argument("--format", type=_csv(str), default=("json", "md", "csv"), metavar="LIST",
                   help="any of json,md,csv,png (default json,md,csv; png needs the plot extra)")
    p.set_defaults(func=cmd_bench)
    bsub = p.add_subparsers(dest="bench_command", metavar="compare")
    bsub.required = False
    c = bsub.add_parser("compare", help="compare two bench reports with noise-aware verdicts")
    c.add_argument("a", metavar="A.json")
    c.add_argument("b", metavar="B.json")
    c.add_argument("--min-change", type=fraction(), default=None, metavar="FRACTION",
                   help="differences below this fraction of A's p50 are 'no change' (default 0.03)")
    c.add_argument("--json", action="store_true", help="print the comparison as JSON")
    c.add_argument("--fail-on-slower", action="store_true", help="exit 1 when any variant is slower")
    c.set_defaults(func=cmd_compare)


class Progress:
    """Progress on stderr: one rewritten line on a terminal, a line every few seconds otherwise."""

    def __init__(self, stream=None, interval_s: float = PLAIN_PROGRESS_INTERVAL_S) -> None:
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval_s = interval_s
        self._last = 0.0
        self._head = ""
        self.stop_note = False

    def _write(self, text: str, final: bool = False) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K" + text[:200] + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def __call__(self, ev: dict) -> None:
        kind = ev.get("event")
        if self.stop_note:
            self.stop_note = False
            self._write("stopping after the current measurement (Ctrl-C again to abandon it)", final=True)
        if kind == "job":
            t = "default" if ev["threads"] is None else ev["threads"]
            self._head = f"[{ev['index'] + 1}/{ev['total']}] {ev['variant']} {ev['backend'] or ''} threads={t}"
            self._write(f"{self._head} loading")
            self._last = time.monotonic()
        elif kind == "progress":
            now = time.monotonic()
            if not self.tty and now - self._last < self.interval_s:
                return
            self._last = now
            if ev.get("duration_s"):
                step = f"{ev['phase']} {ev.get('elapsed_s', 0):.0f}/{ev['duration_s']:.0f} s"
            else:
                step = f"{ev['phase']} {ev['done']}/{ev['total']}"
            last = f"  last {ev['last_ms']:.2f} ms" if ev.get("last_ms") is not None else ""
            self._write(f"{self._head} {step}{last}")
        elif kind == "job_done":
            r = ev["result"]
            lat = r.get("latency_ms") or {}
            what = f"p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms" if lat else (r.get("error") or "")
            self._write(f"{self._head} {r['status']}: {what}", final=True)


def _default_variants():
    from edge import registry
    from edge.bench.runner import FORMAT_BACKENDS, variants_from_models
    from edge.errors import ModelIntegrityError, ModelNotFoundError

    names = []
    for name, card in registry.builtin_cards().items():
        if Path(card.file).suffix.lower() not in FORMAT_BACKENDS:
            continue
        try:
            registry.resolve_model(card, download=False)
        except (ModelNotFoundError, ModelIntegrityError):
            continue
        names.append(name)
    if not names:
        from edge.errors import BenchError

        raise BenchError("no shared model found locally: pass --model or --bundle, or set EDGE_MODEL_DIR")
    return variants_from_models(names)


def _profile(args, fp: dict):
    """(DeviceProfile | None, report dict | None)."""
    from edge.bench.device import guess_profile_name
    from edge.bench.roofline import calibrate_peak_gflops, calibrated_compute
    from edge.profile import ComputeSpec, load_profile, profiles_dir

    from edge.profile_use import ENV_PROFILE

    prof, source = None, None
    chosen = args.profile or os.environ.get(ENV_PROFILE)
    if chosen:
        prof, source = load_profile(chosen), "given"
    else:
        name = guess_profile_name(fp)
        path = profiles_dir() / f"{name}.toml" if name else None
        if path is not None and path.is_file():
            prof, source = load_profile(path), "guessed from the board"
    compute = prof.compute if prof else None
    calibration = None
    if args.calibrate:
        calibration = calibrate_peak_gflops()
        one = calibration.gflops_one_thread
        print(f"calibrated fp32 peak: {calibration.gflops:.1f} GFLOP/s (numpy {calibration.n}x{calibration.n} "
              f"float32 matmul, best of {calibration.repeats}: all threads {calibration.gflops_all_threads:.1f}, "
              f"one thread {'-' if one is None else f'{one:.1f}'} x {calibration.cores} cores)", file=sys.stderr)
        compute = calibrated_compute(compute or ComputeSpec(peak_gflops_fp32=calibration.gflops, peak_gops_int8=calibration.gflops), calibration)
    if compute is None:
        return None, None, None
    info = {"name": prof.name if prof else "calibrated", "path": prof.path if prof else None,
            "board": prof.board if prof else None, "cores": prof.cpu.cores if prof else None, "source": source,
            "compute": msgspec.structs.asdict(compute),
            "datasheet": msgspec.structs.asdict(prof.compute) if prof else None,
            "calibration": calibration.to_dict() if calibration else None}
    return prof, compute, info


def cmd_bench(args) -> int:
    from edge.bench import device, report
    from edge.bench.inputs import load_frames
    from edge.bench.runner import (BenchConfig, BenchRunner, pipeline_variants, variants_from_bundle,
                                   variants_from_models)

    formats = tuple(args.format)
    unknown = [f for f in formats if f not in report.FORMATS]
    if unknown:
        raise ValueError(f"unknown --format {', '.join(unknown)}; valid: {', '.join(report.FORMATS)}")
    if "png" in formats:
        report.require_matplotlib()  # fail before a long run, not after it
    if args.pipeline and args.bundle:
        raise ValueError("--pipeline takes --model names, not --bundle")
    if args.trust and not args.bundle:
        raise ValueError("--trust verifies a release: give --bundle DIR_OR_TAR too")
    from edge.profile_use import engine_options, thermal_check

    probe = thermal_check(None).probe()  # under $EDGE_SYSFS_ROOT when set (tests fake /sys with it)
    fp = device.fingerprint(probe)
    prof, compute, prof_info = _profile(args, fp)
    check = thermal_check(prof)
    eng = engine_options(prof)  # threads clamped to the board's cores and this machine's CPUs; providers
    if eng.note:
        print(f"edge bench: {eng.note}", file=sys.stderr)
    threads = args.threads or (eng.threads,)
    config = BenchConfig(warmup=args.warmup, iters=None if args.duration else args.iters, duration_s=args.duration,
                         threads=tuple(threads), backends=tuple(args.backend) if args.backend else None,
                         num_inputs=args.num_inputs, inputs=args.inputs, input_size=args.input_size,
                         pipeline=args.pipeline, processes=args.processes,
                         engine_options={k: v for k, v in eng.kwargs().items() if k != "threads"} or None)
    if args.pipeline:
        variants = pipeline_variants(args.pipeline, args.model)
    elif args.bundle:
        from edge.release import open_release

        release = open_release(args.bundle, args.trust)  # verified before any model is opened
        print(f"edge bench: {release.describe()}", file=sys.stderr)
        variants = variants_from_bundle(release.path) + (variants_from_models(args.model) if args.model else [])
    else:
        variants = variants_from_models(args.model) if args.model else _default_variants()
    frames = load_frames(args.inputs, args.num_inputs)
    out = Path(args.out or time.strftime("bench-%Y%m%d-%H%M%S"))
    progress = Progress()
    zones = check.zones
    commands = {"vcgencmd": check.vcgencmd, "nvpmodel": check.nvpmodel}
    runner = BenchRunner(config, compute=compute, cores=(prof.cpu.cores if prof else fp.get("cores") or 1),
                         on_event=progress, probe=probe, thermal_zones=zones, thermal_commands=commands)
    before = device.thermal_snapshot(probe, zones, **commands)
    created = report._now()
    command = ["edge", "bench", *sys.argv[2:]] if len(sys.argv) > 1 and sys.argv[1] == "bench" else None

    def assemble(results, done: bool) -> dict:
        return report.build_report(config.to_dict(), fp, results, profile=prof_info, thermal_before=before,
                                   thermal_after=device.thermal_snapshot(probe, zones, **commands) if done else None,
                                   interrupted=runner.stopping or not done, planned=planned[0], command=command,
                                   created=created)

    planned = [0]

    def on_event(ev):
        if ev.get("event") == "job":
            planned[0] = ev["total"]
        progress(ev)

    runner.on_event = on_event
    presses = [0]

    def on_sigint(signum, frame):  # noqa: ARG001
        presses[0] += 1
        progress.stop_note = presses[0] == 1
        runner.request_stop(force=presses[0] > 1)

    old = signal.signal(signal.SIGINT, on_sigint)
    try:
        results = runner.run(variants, frames,
                             on_result=lambda rs: report.write_json(assemble(rs, False), out / "bench.json"))
    finally:
        signal.signal(signal.SIGINT, old)
    final = assemble(results, True)
    final["thermal_check"] = _thermal_verdict(check, final, prof)
    written = report.write_outputs(final, out, formats)
    sys.stdout.write(report.to_markdown(final))
    print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    if runner.stopping:
        return EXIT_INTERRUPTED
    return EXIT_FAIL if any(r.get("status") == "error" for r in results) else EXIT_OK


def _thermal_verdict(check, report: dict, prof) -> dict | None:
    """Whether the run crossed the profile's throttle limit; warns on stderr when it did."""
    snaps = [report["device"].get("thermal_before"), report["device"].get("thermal_after")]
    for r in report.get("results") or []:
        snaps += [r.get("thermal_before"), r.get("thermal_after")]
    verdict = check.verdict(snaps)
    if verdict and verdict["crossed"]:
        hot = verdict["max_temp_c"]
        flags = f"; firmware reports {', '.join(verdict['firmware_flags'])}" if verdict["firmware_flags"] else ""
        print(f"edge bench: WARNING: this run crossed the thermal throttle limit of profile {prof.name} "
              f"({verdict['throttle_c']:g} °C; hottest reading {'-' if hot is None else f'{hot:.1f}'} °C{flags}): "
              "the board may have slowed down during it, so these latencies may be pessimistic; cool it "
              "(fan, heatsink) and run again", file=sys.stderr)
    return verdict


def cmd_compare(args) -> int:
    import json

    from edge.bench.compare import MIN_RELATIVE, SLOWER, compare_reports, context_warnings, format_comparison
    from edge.bench.report import load_report

    a, b = load_report(args.a), load_report(args.b)
    if args.min_change is not None and not 0 <= args.min_change < 1:
        raise ValueError(f"--min-change must be a fraction in [0, 1), got {args.min_change}")
    rows = compare_reports(a, b, min_relative=MIN_RELATIVE if args.min_change is None else args.min_change)
    notes = context_warnings(a, b)
    if args.json:
        print(json.dumps({"a": args.a, "b": args.b, "comparisons": [r.to_dict() for r in rows], "notes": notes},
                         indent=1))
    else:
        print(f"A: {args.a}\nB: {args.b}\n")
        sys.stdout.write(format_comparison(rows, notes))
    if args.fail_on_slower and any(r.verdict == SLOWER for r in rows):
        return EXIT_FAIL
    return EXIT_OK if rows else EXIT_ERROR
