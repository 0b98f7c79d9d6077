"""torch -> ONNX export of each model role, with parity verification against PyTorch."""
