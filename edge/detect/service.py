"""The long-running detection service: capture → prepare → infer → post-process → sinks.

Each stage runs in its own thread and hands over to the next through a bounded
:class:`FrameSlot`, so preprocessing of frame ``n + 1`` and decoding, tracking and zones of frame
``n - 1`` overlap inference of frame ``n`` (onnxruntime, LiteRT and OpenCV release the GIL while
they compute):

- **capture** reads frames into the frame slot. With the ``latest`` policy (live sources) the
  slot holds one frame and a new frame replaces an unprocessed one, which is counted as dropped:
  the pipeline drops frames rather than lag behind the camera. With the ``all`` policy (recorded
  files) capture waits for room instead, so every frame of a file is processed;
- **prepare** waits until the inference stage has room, then takes the newest frame and runs
  :meth:`Detector.preprocess` (letterbox / resize) on it; waiting *first* keeps the frame it
  prepares as fresh as the overlap allows: at most one inference old when inference starts;
- **infer** (the thread that calls :meth:`DetectionService.run`) runs :meth:`Detector.infer`;
- **post-process** runs :meth:`Detector.postprocess` (decode + NMS), the tracker and the zones in
  frame order, and counts events;
- **sinks** hands each frame's :class:`EventBatch` to every sink through a bounded queue (when
  sinks fall behind, post-processing waits: events are never dropped in memory; the network
  sinks keep their own disk buffers);
- optionally a small HTTP endpoint (``/health``, ``/metrics``) on 127.0.0.1.

Frames are dropped only before inference (the frame slot under ``latest``, and frames still
waiting in the first two hand-overs at a stop) or with a stage's error; every inferred frame is
post-processed in order and its events reach the sinks. ``frames_captured == frames_processed +
frames_dropped`` after a run; ``/metrics`` says where frames were dropped (``frames_dropped_at``)
and how full each hand-over is (``queue_depth``).

:meth:`DetectionService.request_stop` is safe to call from a signal handler: it only sets a
flag. The service then finishes the inference in hand, post-processes every inferred frame,
passes every event produced to the sinks, lets them deliver what they hold (``drain_timeout``),
and returns. An error in any stage stops the service the same way and is raised by
:meth:`~DetectionService.run` afterwards.

Example:
    >>> from edge.sources import open_source                              # doctest: +SKIP
    >>> from edge.detect import create_detector                            # doctest: +SKIP
    >>> with open_source("0") as src, create_detector("yolox_nano_416") as det:  # doctest: +SKIP
    ...     DetectionService(src, det, sinks=[JsonlSink("events.jsonl")]).run()
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Sequence

import numpy as np

from edge.detect.frameslot import FrameSlot
from edge.detect.health import HealthServer
from edge.detect.metrics import LatencyStats, RateMeter
from edge.detect.service_options import (FRAME_POLICIES, ServiceOptions, ServiceSummary, crop_jpeg_b64,
                                         frame_policy_for)
from edge.detect.sinks.base import EventBatch, Sink
from edge.detect.tracker import ByteTracker
from edge.detect.zones import ZoneMonitor
from edge.errors import EdgeError, ServiceError
from edge.types import Detections, Frame

__all__ = ["DetectionService", "ServiceOptions", "ServiceSummary", "FrameSlot", "FRAME_POLICIES", "frame_policy_for"]

log = logging.getLogger(__name__)

#: Seconds between looks at the stop flag while waiting for a frame.
STOP_POLL = 0.1
#: Seconds to wait for the capture thread to return from a blocking read at shutdown.
CAPTURE_JOIN_TIMEOUT = 5.0
#: Prepared tensors waiting for inference: one, so preprocessing runs exactly one frame ahead.
PREPARED_QUEUE = 1
#: Inference outputs waiting for post-processing: two absorb jitter (a GIL hand-over, a slow
#: tracker step) without letting the inference stage run far ahead of the events.
RESULTS_QUEUE = 2
_MS = 1e3


class _DetectOnly:
    """Stages for a detector that only has ``detect``: everything runs in the infer stage."""

    def __init__(self, detector) -> None:
        self._detector = detector

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        return image

    def infer(self, image: np.ndarray) -> Detections:
        return self._detector.detect(image)

    def postprocess(self, dets: Detections, _image: np.ndarray) -> Detections:
        return dets


class DetectionService:
    """Run a detector over a source and report events to sinks until the source ends or a stop.

    Args:
        source: an opened or unopened :class:`~edge.sources.FrameSource` (the caller closes it).
        detector: a :class:`~edge.detect.Detector` (its ``preprocess``, ``infer`` and
            ``postprocess`` run in separate stage threads) or anything with
            ``detect(image_bgr) -> Detections`` and ``labels`` (run whole in the infer stage).
        sinks: where events go; the service closes them at the end.
        tracker: default :class:`ByteTracker` with its default thresholds.
        zones: default :class:`ZoneMonitor` over the whole frame.
        options: see :class:`ServiceOptions`.
    """

    def __init__(self, source, detector, *, sinks: Sequence[Sink] = (), tracker: ByteTracker | None = None,
                 zones: ZoneMonitor | None = None, options: ServiceOptions | None = None) -> None:
        self.source, self.detector = source, detector
        staged = all(callable(getattr(detector, m, None)) for m in ("preprocess", "infer", "postprocess"))
        self._stages = detector if staged else _DetectOnly(detector)
        self.sinks = list(sinks)
        self.options = options or ServiceOptions()
        self.labels = tuple(getattr(detector, "labels", ()) or ())
        self.tracker = tracker or ByteTracker()
        self.zones = zones or ZoneMonitor(labels=self.labels, device=self.options.device)
        policy = self.options.frame_policy
        self.policy = frame_policy_for(source) if policy == "auto" else policy
        self.slot = FrameSlot(self.policy, 1 if self.policy == "latest" else self.options.frame_queue)
        self._prepared = FrameSlot("all", PREPARED_QUEUE)
        self._results = FrameSlot("all", RESULTS_QUEUE)
        self._batches: queue.Queue = queue.Queue(self.options.batch_queue)
        self.latency = LatencyStats()
        self.fps = RateMeter()
        self._stop_requested = False
        self._stopping = False
        self._error: BaseException | None = None
        self._error_lock = threading.Lock()
        self._sink_errors = 0
        self.frames_captured = self.frames_processed = self.events_total = 0
        self.events_by_type: dict[str, int] = {}
        self._started = time.monotonic()
        self._health: HealthServer | None = None
        self._threads = {name: threading.Thread(target=target, name=name, daemon=True) for name, target in (
            ("capture", self._capture), ("prepare", self._prepare), ("postprocess", self._postprocess),
            ("sinks", self._deliver))}

    # -- control -----------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask the service to stop. Async-signal-safe: it only sets flags."""
        self._stop_requested = True
        interrupt = getattr(self.source, "interrupt", None)  # a source waiting for its camera to come back
        if interrupt is not None:
            interrupt()

    @property
    def stopping(self) -> bool:
        return self._stop_requested or self._stopping

    @property
    def health_port(self) -> int | None:
        return self._health.port if self._health is not None else None

    @property
    def frames_dropped(self) -> int:
        """Frames captured but never inferred (latest-frame replacements and frames left at a stop)."""
        return self.slot.dropped + self._prepared.dropped + self._results.dropped

    def run(self) -> ServiceSummary:
        """Process frames until the source ends or :meth:`request_stop`; then flush and close the sinks.

        Raises:
            SourceError: (or another error of a stage thread) after the sinks were flushed.
            ServiceError: the health port could not be bound (the sinks are closed, nothing ran).
        """
        if self.options.health_port is not None:
            try:
                self._health = HealthServer(self.health, self.metrics, host=self.options.health_host,
                                            port=self.options.health_port).start()
            except OSError as exc:
                for sink in self.sinks:  # they were handed over to us: close them before failing
                    sink.close(0)
                raise ServiceError(f"cannot serve /health on {self.options.health_host}:"
                                   f"{self.options.health_port}: {exc.strerror or exc}") from None
            log.info("health endpoint on http://%s:%d/health", self.options.health_host, self._health.port)
        self._started = time.monotonic()
        for thread in self._threads.values():
            thread.start()
        try:
            self._infer_loop()
        finally:
            self._shutdown()
        if self._error is not None:
            raise self._error
        return ServiceSummary(self.frames_captured, self.frames_processed, self.frames_dropped, self.events_total,
                              self._stop_requested, self.metrics())

    def _fail(self, exc: BaseException) -> None:
        """Keep a stage thread's error for :meth:`run` to raise, and stop the service."""
        with self._error_lock:
            if self._error is None:
                self._error = exc
        self._stop_requested = True

    # -- stages ------------------------------------------------------------------------------
    def _capture(self) -> None:
        try:
            while not self.stopping:
                t0 = time.perf_counter()
                frame = self.source.read()
                if frame is None:
                    break
                t1 = time.perf_counter()
                self.latency.record("capture", (t1 - t0) * _MS)
                self.frames_captured += 1
                if not self.slot.put((frame, t1)):
                    self.slot.count_drop()  # closed while handing over: counted, not processed
                    break
        except BaseException as exc:  # noqa: BLE001 - re-raised by run()
            self._fail(exc)
        finally:
            self.slot.close()

    def _prepare(self) -> None:
        try:
            while not self.stopping:
                # Room first, frame second: under ``latest`` the frame taken is the newest one.
                if not self._prepared.wait_room(STOP_POLL):
                    if self._prepared.closed:
                        break
                    continue
                item = self.slot.get(STOP_POLL)
                if item is None:
                    if self.slot.finished:
                        break
                    continue
                frame, t_captured = item
                t0 = time.perf_counter()
                try:
                    prepared = self._stages.preprocess(frame.image)
                except BaseException:
                    self.slot.count_drop()  # the frame in hand is lost with the error
                    raise
                self.latency.record("preprocess", (time.perf_counter() - t0) * _MS)
                if not self._prepared.put((frame, prepared, t_captured)):
                    self._prepared.count_drop()
                    break
        except BaseException as exc:  # noqa: BLE001 - re-raised by run()
            self._fail(exc)
        finally:
            self._prepared.close()

    def _infer_loop(self) -> None:
        idle_since = None  # end of the previous inference: the gap to the next is the stage's idle time
        while not self._stop_requested:
            item = self._prepared.get(STOP_POLL)
            if item is None:
                if self._prepared.finished:
                    break
                continue
            frame, prepared, t_captured = item
            t0 = time.perf_counter()
            if idle_since is not None:
                self.latency.record("inference_idle", (t0 - idle_since) * _MS)
            try:
                outputs = self._stages.infer(prepared)
            except BaseException:
                self._prepared.count_drop()  # the frame in hand is lost with the error
                raise
            idle_since = time.perf_counter()
            self.latency.record("inference", (idle_since - t0) * _MS)
            if not self._results.put((frame, prepared, outputs, t_captured)):  # post-processing failed
                self._results.count_drop()
                break

    def _postprocess(self) -> None:
        try:
            while True:  # no stop check: every inferred frame is finished
                item = self._results.get(STOP_POLL)
                if item is None:
                    if self._results.finished:
                        break
                    continue
                try:
                    self._process(*item)
                except BaseException:
                    self._results.count_drop()  # the frame in hand is lost with the error
                    raise
        except BaseException as exc:  # noqa: BLE001 - re-raised by run()
            self._fail(exc)
        finally:
            self._results.close(discard=True)  # after a failure: release (and count) what waits

    def _process(self, frame: Frame, prepared, outputs, t_captured: float) -> None:
        t0 = time.perf_counter()
        dets = self._stages.postprocess(outputs, prepared)
        t1 = time.perf_counter()
        tracked = self.tracker.update(dets)
        t2 = time.perf_counter()
        events = self.zones.update(tracked, frame_size=(frame.width, frame.height), frame_time=frame.timestamp,
                                   frame_index=frame.index, ended_ids=self.tracker.ended_ids, source=frame.source_id)
        t3 = time.perf_counter()
        self.latency.record("decode", (t1 - t0) * _MS)
        self.latency.record("tracking", (t2 - t1) * _MS)
        self.latency.record("zones", (t3 - t2) * _MS)
        if events and (self.options.event_image or self.options.device):
            events = [self._finish_event(e, frame) for e in events]
        self.frames_processed += 1
        self.fps.tick()
        for e in events:
            self.events_by_type[e.event_type.value] = self.events_by_type.get(e.event_type.value, 0) + 1
        self.events_total += len(events)
        self._batches.put((EventBatch(frame, tracked, tuple(events), self.labels), t_captured))

    def _finish_event(self, event, frame: Frame):
        changes = {}
        if self.options.device and event.device != self.options.device:
            changes["device"] = self.options.device
        if self.options.event_image:
            changes["image_jpeg_b64"] = crop_jpeg_b64(frame.image, event.box)
        return dataclasses.replace(event, **changes) if changes else event

    def _deliver(self) -> None:
        while True:
            item = self._batches.get()
            if item is None:
                return
            batch, t_captured = item
            t0 = time.perf_counter()
            for sink in self.sinks:
                t = time.perf_counter()
                try:
                    sink.emit(batch)
                except (EdgeError, OSError) as exc:
                    self._sink_errors += 1
                    log.error("sink %s failed: %s", sink.name, exc)
                except Exception:  # noqa: BLE001 - a sink bug must not stall the pipeline
                    self._sink_errors += 1
                    log.exception("sink %s failed", sink.name)
                self.latency.record(f"sink:{sink.kind}", (time.perf_counter() - t) * _MS)
            t1 = time.perf_counter()
            self.latency.record("sinks", (t1 - t0) * _MS)
            self.latency.record("end_to_end", (t1 - t_captured) * _MS)

    def _shutdown(self) -> None:
        self._stopping = True
        # Frames not yet inferred are dropped (and counted); inferred ones are finished.
        self.slot.close(discard=True)
        self._prepared.close(discard=True)
        capture = self._threads["capture"]
        capture.join(CAPTURE_JOIN_TIMEOUT)
        if capture.is_alive():
            log.warning("capture thread still blocked in a read after %.0f s; leaving it", CAPTURE_JOIN_TIMEOUT)
        self._threads["prepare"].join()
        self._results.close()
        self._threads["postprocess"].join()
        self._batches.put(None)
        self._threads["sinks"].join()
        for sink in self.sinks:
            try:
                sink.close(self.options.drain_timeout)
            except Exception:  # noqa: BLE001 - one failing sink must not keep the others open
                log.exception("closing sink %s failed", sink.name)
        if self._health is not None:
            self._health.stop()

    # -- observability -----------------------------------------------------------------------
    def health(self) -> dict:
        status = "stopping" if self.stopping else "ok" if self.frames_processed else "starting"
        if getattr(self.source, "state", None) == "reconnecting" and not self.stopping:
            status = "reconnecting"  # the camera dropped; the service waits for it with its state intact
        if self._error is not None:
            status = "failed"
        return {"status": status, "uptime_s": round(time.monotonic() - self._started, 3),
                "frames_processed": self.frames_processed}

    def metrics(self) -> dict:
        sinks = {s.name: {"kind": s.kind, **s.stats()} for s in self.sinks}
        brokers = [v["state"] for v in sinks.values() if v["kind"] == "mqtt"]
        elapsed = max(time.monotonic() - self._started, 1e-9)
        return {
            "uptime_s": round(elapsed, 3),
            "frame_policy": self.policy,
            "fps": round(self.fps.rate(), 3),
            "fps_mean": round(self.frames_processed / elapsed, 3),
            "frames_captured": self.frames_captured,
            "frames_processed": self.frames_processed,
            "frames_dropped": self.frames_dropped,
            # Where frames were dropped: the frame slot (latest-frame policy) or, at a stop,
            # the hand-overs before inference.
            "frames_dropped_at": {"frames": self.slot.dropped, "prepared": self._prepared.dropped,
                                  "results": self._results.dropped},
            "queue_depth": {"frames": len(self.slot), "prepared": len(self._prepared),
                            "results": len(self._results), "batches": self._batches.qsize()},
            "latency_ms": self.latency.summary(),
            "events": self.events_total,
            "events_by_type": dict(self.events_by_type),
            "tracks_active": len(self.tracker.active_ids),
            "broker": brokers[0] if len(brokers) == 1 else (brokers or None),
            "buffered_events": sum(v.get("buffered", 0) for v in sinks.values()),
            "events_dropped": sum(v.get("dropped", 0) for v in sinks.values()),
            "sink_errors": self._sink_errors,
            "sinks": sinks,
            "source": self.source.stats() if hasattr(self.source, "stats") else None,
        }
