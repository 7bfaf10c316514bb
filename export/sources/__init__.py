"""Model sources (torchvision, MiniFASNet, Ultralytics YOLO) exported to a float ONNX file with its card."""
