"""Quantisation: calibration data, ONNX int8/fp16, bias correction, mixed-precision fallback."""
