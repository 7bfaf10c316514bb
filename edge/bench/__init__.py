"""On-device benchmarking: ``edge bench``.

Modules, each with one job:

- :mod:`edge.bench.runner` — plans variant × backend × threads and runs each in a fresh worker
  (:mod:`edge.bench.worker`) on fixed real inputs (:mod:`edge.bench.inputs`);
- :mod:`edge.bench.device` — board fingerprint, temperatures, throttling (injectable sysfs root);
- :mod:`edge.bench.roofline` — MACs from the card (counted at export time), else from a TFLite
  file (:mod:`edge.bench.tflite_macs`) or a bare ONNX file's stated shapes
  (:mod:`edge.bench.onnx_macs`), lower bound, efficiency;
- :mod:`edge.bench.stats` — latency summaries and spreads;
- :mod:`edge.bench.report` — versioned JSON (schema in ``schema/``), Markdown, CSV, PNG;
- :mod:`edge.bench.compare` — noise-aware comparison of two reports.

Importing this package imports no inference runtime.
"""
