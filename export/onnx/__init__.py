"""ONNX: export from torch, the clean fp32 graph, graph rewrites, ONNX -> torch, every ONNX variant gated."""
