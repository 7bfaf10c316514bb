"""Throughput of the whole detection service against the bare inference rate, same process.

For each model, rounds interleave four measurements so they share the machine's load:

1. **bare**: ``engine.run`` on already-prepared tensors, back to back: the rate inference alone
   allows, which the pipeline is judged against; measured right before and right after each
   pipeline run and averaged, so that a drifting machine load biases neither side;
2. **pipeline**: :class:`edge.detect.service.DetectionService` reading the source itself, its
   stages overlapped in threads (capture + JPEG decoding, letterbox, inference, decode + NMS +
   ByteTrack + zones, JSONL sink [+ MQTT]), every frame processed (``all`` policy); per-stage
   latency from the service's own metrics;
3. **serial post-processing**: decode + NMS, tracking and zones run alone in this thread on the
   same frames' recorded outputs: their cost without contention, against the bare inference
   time of the same round;
4. **plain** (YOLOX ONNX only): a straightforward loop a user might write: ``cv2.imread``, an
   ``onnxruntime.InferenceSession``, Python post-processing (``PlainYolox`` from
   ``detect_speed.py``), no tracking.

Prints frames per second (the service's steady rate, and the rate over the whole run including
start-up and shutdown), pipeline / bare, how much slower inference runs inside the pipeline
than alone (the other stages share the cores), the inference stage's idle share, decode + NMS +
tracking + zones as a share of inference (serial, and inside the pipeline), and the per-stage
percentiles. ``--readme`` writes the result into the "Detection pipeline" section of
benchmarks/README.md, between its generated-block markers (a new section is appended when the
markers are missing); the prose after the block is kept.

Usage:
    .venv/bin/python benchmarks/detect_pipeline.py [--source DIR_OR_VIDEO] [--model yolox_nano_416 ...]
        [--frames 64] [--rounds 4] [--threads 1 2] [--mqtt mqtt://127.0.0.1:1883/bench] [--json OUT] [--readme]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge import paths  # noqa: E402
from edge.cli.detect_cmd import TRACK_LOW_SCORE  # noqa: E402
from edge.detect import create_detector  # noqa: E402
from edge.detect.service import DetectionService, ServiceOptions  # noqa: E402
from edge.detect.sinks import open_sink  # noqa: E402
from edge.detect.sinks.jsonl import JsonlSink  # noqa: E402
from edge.detect.tracker import ByteTracker, TrackerConfig  # noqa: E402
from edge.detect.zones import ZoneMonitor  # noqa: E402
from edge.imageio import load_image  # noqa: E402
from edge.preprocess import prepare  # noqa: E402
from edge.sources import open_source  # noqa: E402
from edge.sources.files import list_images  # noqa: E402

_MS = 1e3
WARMUP = 3
#: Stages shown in the latency table, in pipeline order.
STAGES = ("capture", "preprocess", "inference", "inference_idle", "decode", "tracking", "zones", "sinks", "end_to_end")
#: Stages counted as post-processing overhead against inference.
OVERHEAD = ("decode", "tracking", "zones")
README = Path(__file__).resolve().parent / "README.md"
BEGIN, END = "<!-- detect_pipeline.py: begin -->", "<!-- detect_pipeline.py: end -->"


def _first_images(source: str, n: int) -> list:
    with open_source(source, max_frames=n) as src:
        return [f.image for f in src]


def bare_rate(detector, feeds: list[dict], calls: int) -> tuple[float, float]:
    """Milliseconds per ``engine.run`` on prepared tensors: (wall, process CPU) means over ``calls``."""
    for f in feeds[:WARMUP]:
        detector.engine.run(f)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(calls):
        detector.engine.run(feeds[i % len(feeds)])
    return (time.perf_counter() - t0) * _MS / calls, (time.process_time() - c0) * _MS / calls


def _tracker(score: float) -> ByteTracker:
    return ByteTracker(TrackerConfig(high_score=score, low_score=min(TRACK_LOW_SCORE, score), new_track_score=score))


def pipeline_run(detector, source: str, frames: int, score: float, sink_specs: list[str], tmp: Path) -> dict:
    """Run the service over ``frames`` frames; return fps and the service's latency summary."""
    sinks = [JsonlSink(tmp / "events.jsonl")]
    sinks += [open_sink(s, device="bench", buffer_dir=tmp / "buffer") for s in sink_specs]
    with open_source(source, max_frames=frames) as src:
        service = DetectionService(src, detector, sinks=sinks, tracker=_tracker(score),
                                   options=ServiceOptions(frame_policy="all", device="bench"))
        t0, c0 = time.perf_counter(), time.process_time()
        summary = service.run()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    # ``fps`` is the service's own rate meter (frames finished between the first and the last
    # completion: the steady state a long-running service sees); ``fps_wall`` also pays for the
    # start (threads, the first frame through every stage) and the stop (draining, closing sinks).
    return {"fps": summary.metrics["fps"], "fps_wall": summary.frames_processed / wall,
            "frames": summary.frames_processed, "events": summary.events,
            "cpu_ms_per_frame": cpu * _MS / max(summary.frames_processed, 1),
            "dropped": summary.frames_dropped, "latency_ms": summary.metrics["latency_ms"]}


def serial_post(detector, recorded: list, score: float, frames: int) -> dict:
    """Mean ms of decode + NMS, tracking and zones run alone over recorded outputs, in frame order."""
    tracker, zones = _tracker(score), ZoneMonitor(labels=detector.labels)
    sums = {"decode": 0.0, "tracking": 0.0, "zones": 0.0}
    for i in range(frames):
        image, prepared, outputs = recorded[i % len(recorded)]
        t0 = time.perf_counter()
        dets = detector.postprocess(outputs, prepared)
        t1 = time.perf_counter()
        tracked = tracker.update(dets)
        t2 = time.perf_counter()
        zones.update(tracked, frame_size=(image.shape[1], image.shape[0]), frame_time=float(i), frame_index=i,
                     ended_ids=tracker.ended_ids)
        t3 = time.perf_counter()
        sums["decode"] += t1 - t0
        sums["tracking"] += t2 - t1
        sums["zones"] += t3 - t2
    return {k: v * _MS / frames for k, v in sums.items()}


def plain_run(model_path: Path, source: str, frames: int, threads: int, score: float) -> float | None:
    """fps of the plain loop (imread + ORT + Python post-processing), or None when unavailable."""
    try:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from detect_speed import PlainYolox
    except ImportError:
        return None
    plain = PlainYolox(model_path, threads)
    folder = Path(source)
    files = list_images(folder) if folder.is_dir() else None
    if files is None:
        return None
    files = files[:frames]
    for f in files[:WARMUP]:
        x, r = plain.preprocess(load_image(f))
        plain.postprocess(plain.infer(x), r, score, 0.45)
    t0 = time.perf_counter()
    for f in files:
        x, r = plain.preprocess(load_image(f))
        plain.postprocess(plain.infer(x), r, score, 0.45)
    return len(files) / (time.perf_counter() - t0)


def measure(model: str, threads: int, args, tmp: Path) -> dict:
    from edge import registry

    ref = registry.resolve(model)
    score = float(0.25 if ref.card.thresholds.score is None else ref.card.thresholds.score)
    with create_detector(model, threads=threads, score_threshold=min(TRACK_LOW_SCORE, score)) as det:
        images = _first_images(args.source, args.frames)
        for img in images[:WARMUP]:
            det.detect(img)
        feeds = [{det.input_name: prepare(img, det.spec)[0]} for img in images]
        recorded = []
        for img in images:
            prepared = det.preprocess(img)
            recorded.append((img, prepared, det.infer(prepared)))
        is_plain = det.kind == "yolox" and ref.path.suffix == ".onnx"
        rounds = []
        for r in range(args.rounds):
            # Bare right before and right after the pipeline: the machine's load drifts, and the
            # average of the two brackets what the pipeline saw.
            before = bare_rate(det, feeds, args.frames)
            pipe = pipeline_run(det, args.source, args.frames, score, args.mqtt, tmp / f"{model}-{r}")
            after = bare_rate(det, feeds, args.frames)
            bare_ms, bare_cpu_ms = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
            post = serial_post(det, recorded, score, args.frames)
            plain_fps = plain_run(ref.path, args.source, args.frames, threads, score) if is_plain else None
            rounds.append({"bare_ms": bare_ms, "bare_cpu_ms": bare_cpu_ms, "pipeline": pipe, "serial_post_ms": post, "plain_fps": plain_fps})
            print(f"  {model} ({threads} threads) round {r + 1}: bare {1e3 / bare_ms:.1f} fps, pipeline {pipe['fps']:.1f} fps"
                  f" ({pipe['fps'] * bare_ms / 1e3:.1%}; {pipe['fps_wall'] * bare_ms / 1e3:.1%} with start + stop), serial decode+tracking+zones {sum(post.values()) / bare_ms:.1%}"
                  " of inference" + (f", plain {plain_fps:.1f} fps" if plain_fps else ""), flush=True)
        backend = det.backend
    # The machine is shared: report medians over rounds, and judge each round against the bare
    # rate measured right before it.
    med = statistics.median
    ratios = [x["pipeline"]["fps"] * x["bare_ms"] / 1e3 for x in rounds]
    best = sorted(rounds, key=lambda x: x["pipeline"]["fps"] * x["bare_ms"])[len(rounds) // 2]  # median round
    lat = best["pipeline"]["latency_ms"]
    in_pipe = lambda x, stage: x["pipeline"]["latency_ms"][stage]["mean"]  # noqa: E731
    return {
        "model": model, "backend": backend, "frames": best["pipeline"]["frames"], "events": best["pipeline"]["events"],
        "dropped": sum(x["pipeline"]["dropped"] for x in rounds),
        "bare_fps": med(1e3 / x["bare_ms"] for x in rounds),
        "pipeline_fps": med(x["pipeline"]["fps"] for x in rounds),
        "pipeline_over_bare": med(ratios),
        "pipeline_over_bare_rounds": ratios,
        "pipeline_fps_wall": med(x["pipeline"]["fps_wall"] for x in rounds),
        "pipeline_wall_over_bare": med(x["pipeline"]["fps_wall"] * x["bare_ms"] / 1e3 for x in rounds),
        # Mean engine.run time inside the pipeline over the bare time of the same round: > 1 when
        # the other stages (and other jobs) take CPU from inference.
        "inference_slowdown": med(in_pipe(x, "inference") / x["bare_ms"] for x in rounds),
        # Share of the inference stage's wall time spent waiting for a prepared frame.
        "inference_idle": med(in_pipe(x, "inference_idle") / (in_pipe(x, "inference") + in_pipe(x, "inference_idle"))
                              for x in rounds),
        "plain_fps": med(x["plain_fps"] for x in rounds) if rounds[0]["plain_fps"] else None,
        # Process CPU time per frame (all threads): bare inference, the whole pipeline, and the
        # difference: what capture, preprocessing, post-processing and sinks cost on top.
        "bare_cpu_ms": med(x["bare_cpu_ms"] for x in rounds),
        "pipeline_cpu_ms": med(x["pipeline"]["cpu_ms_per_frame"] for x in rounds),
        "extra_cpu_ms": med(x["pipeline"]["cpu_ms_per_frame"] - x["bare_cpu_ms"] for x in rounds),
        "serial_post_ms": {k: med(x["serial_post_ms"][k] for x in rounds) for k in OVERHEAD},
        "post_share_serial": med(sum(x["serial_post_ms"].values()) / x["bare_ms"] for x in rounds),
        "post_share_pipeline": med(sum(in_pipe(x, s) for s in OVERHEAD) / in_pipe(x, "inference") for x in rounds),
        "post_share_pipeline_p50": med(sum(x["pipeline"]["latency_ms"][s]["p50"] for s in OVERHEAD)
                                       / x["pipeline"]["latency_ms"]["inference"]["p50"] for x in rounds),
        "latency_ms": {s: lat[s] for s in (*STAGES, *sorted(k for k in lat if k.startswith("sink:"))) if s in lat},
        "rounds": rounds,
    }


def machine() -> str:
    """``x86_64, 2 cores, AVX-512 VNNI``: the architecture, the core count and the vector extension that
    matters most for int8 and float inference (read from /proc/cpuinfo where there is one)."""
    parts = [platform.machine(), f"{os.cpu_count()} cores"]
    try:
        flags = next((ln.split(":", 1)[1].split() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                      if ln.startswith(("flags", "Features"))), [])
    except OSError:
        flags = []
    for flag, name in (("avx512_vnni", "AVX-512 VNNI"), ("avx512f", "AVX-512"), ("avx2", "AVX2"), ("asimddp", "NEON dot product"),
                       ("asimd", "NEON")):
        if flag in flags:
            parts.append(name)
            break
    return ", ".join(parts)


def markdown(results: list[dict], args, load: tuple[float, float]) -> str:
    src = Path(args.source)
    lines = [
        BEGIN, "",
        f"`benchmarks/detect_pipeline.py --threads {' '.join(map(str, args.threads))} --frames {args.frames} "
        f"--rounds {args.rounds}`, {time.strftime('%Y-%m-%d')}, {machine()} "
        f"(shared with other jobs: load average {load[0]:.2f} at the start, {load[1]:.2f} at the end), "
        f"{args.frames} frames of `{src.name if src.is_dir() else args.source}` per round, {args.rounds} interleaved "
        f"rounds; sinks: JSONL{' + MQTT (local Mosquitto)' if args.mqtt else ''}. *pipeline* is the real service "
        "with its stages overlapped in threads, every frame processed; *bare* is `engine.run` alone on prepared "
        "tensors; *plain* is an onnxruntime session with Python post-processing (`detect_speed.py`'s "
        "`PlainYolox`) reading the same folder. fps are medians over rounds, ratios the median of each round's "
        "ratio. *pipeline fps* is the service's steady rate (its rate meter: frames finished between the first and "
        "the last completion); *with start + stop* divides the frames by the whole `run()` instead, including "
        "thread start-up, the first frame's trip through every stage, draining and closing the sinks "
        "(MQTT waits for its acknowledgements). *inference ×* is the mean `engine.run` time inside the pipeline over the bare time of the same "
        "round; *idle* the share of the inference stage's time spent waiting for a prepared frame. *CPU ms / "
        "frame* is the process's CPU time (all threads) per frame: inference alone, and the whole pipeline "
        "(capture with JPEG decoding, preprocessing, post-processing, sinks on top). "
        "*post / inference* is decode + NMS + tracking + zones over inference: *serial* runs them alone on "
        "the recorded outputs of the same frames, *in pipeline* uses the service's own stage means "
        "(concurrent with inference, so inflated by contention).", "",
        "| model | backend | threads | bare fps | pipeline fps | pipeline / bare | … with start + stop | inference × "
        "| idle | CPU ms / frame: bare, pipeline | plain ORT loop fps | post / inference, serial "
        "| post / inference, in pipeline (means) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        plain = f"{r['plain_fps']:.1f}" if r["plain_fps"] else "—"
        lines.append(f"| {r['model']} | {r['backend']} | {r['threads']} | {r['bare_fps']:.1f} | {r['pipeline_fps']:.1f} | "
                     f"{r['pipeline_over_bare']:.1%} | {r['pipeline_wall_over_bare']:.1%} | {r['inference_slowdown']:.2f} | {r['inference_idle']:.1%} | "
                     f"{r['bare_cpu_ms']:.1f}, {r['pipeline_cpu_ms']:.1f} | {plain} | "
                     f"{r['post_share_serial']:.1%} | {r['post_share_pipeline']:.1%} |")
    lines += ["", "Serial post-processing, ms per frame (medians over rounds):", "",
              "| model | threads | decode + NMS | tracking | zones |", "|---|---:|---:|---:|---:|"]
    for r in results:
        sp = r["serial_post_ms"]
        lines.append(f"| {r['model']} | {r['threads']} | {sp['decode']:.2f} | {sp['tracking']:.2f} | {sp['zones']:.2f} |")
    for r in results:
        lines += ["", f"Per-stage latency in the pipeline, {r['model']}, {r['threads']} thread(s) (ms, from the "
                      "service's metrics, median round; decode includes NMS and mapping to source pixels; capture "
                      "includes JPEG decoding):", "", "| stage | mean | p50 | p90 | p99 |", "|---|---:|---:|---:|---:|"]
        for stage, row in r["latency_ms"].items():
            lines.append(f"| {stage} | {row['mean']:.2f} | {row['p50']:.2f} | {row['p90']:.2f} | {row['p99']:.2f} |")
    return "\n".join(lines + ["", END])


def write_readme(block: str) -> None:
    """Replace the generated block of the README (or append a new section holding it)."""
    text = README.read_text(encoding="utf-8") if README.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## Detection pipeline\n\n" + block + "\n"
    README.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    data = paths.data_dir()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", default=str(data / "coco128" / "images") if data else None,
                    help="image folder or video file (default: coco128 images)")
    ap.add_argument("--model", action="append", help="detector(s) to run (default: yolox_nano_416)")
    ap.add_argument("--frames", type=int, default=64, help="frames per round")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="inference thread counts to try")
    ap.add_argument("--mqtt", action="append", default=[], help="also publish to this mqtt:// sink")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--readme", action="store_true", help=f"write the generated block of {README}")
    args = ap.parse_args(argv)
    if args.source is None:
        ap.error("no --source and no data directory (EDGE_DATA_DIR)")
    models = args.model or ["yolox_nano_416"]
    load_start = os.getloadavg()[0]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for threads in args.threads:
            for model in models:
                results.append({"threads": threads, **measure(model, threads, args, Path(tmp) / str(threads))})
    load = (load_start, os.getloadavg()[0])
    print(f"\n{machine()}; load average {load[0]:.2f} at the start, {load[1]:.2f} at the end")
    for r in results:
        print(f"\n{r['model']} ({r['backend']}, {r['threads']} threads): bare {r['bare_fps']:.1f} fps, "
              f"pipeline {r['pipeline_fps']:.1f} fps = {r['pipeline_over_bare']:.1%} of bare (median of rounds; "
              f"rounds {', '.join(f'{x:.0%}' for x in r['pipeline_over_bare_rounds'])}; "
              f"{r['pipeline_wall_over_bare']:.1%} with start + stop), inference in the pipeline "
              f"x{r['inference_slowdown']:.2f} its bare time, idle {r['inference_idle']:.1%}, "
              + (f"plain ORT loop {r['plain_fps']:.1f} fps, " if r["plain_fps"] else "")
              + f"CPU per frame {r['bare_cpu_ms']:.1f} ms bare, {r['pipeline_cpu_ms']:.1f} ms pipeline, "
              f"decode+NMS+tracking+zones = {r['post_share_serial']:.1%} of inference run alone, "
              f"{r['post_share_pipeline']:.1%} inside the pipeline (means; {r['post_share_pipeline_p50']:.1%} medians); "
              f"{r['dropped']} frames dropped")
        print("  serial: " + ", ".join(f"{k} {v:.2f} ms" for k, v in r["serial_post_ms"].items()))
        for stage, row in r["latency_ms"].items():
            print(f"  {stage:<14} mean {row['mean']:7.2f}  p50 {row['p50']:7.2f}  p90 {row['p90']:7.2f}  "
                  f"p99 {row['p99']:7.2f} ms")
    if args.json:
        args.json.write_text(json.dumps({"load_average": load, "results": results}, indent=2))
    if args.readme:
        write_readme(markdown(results, args, load))
        print(f"wrote the generated block of {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
