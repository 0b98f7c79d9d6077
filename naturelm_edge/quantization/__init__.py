"""Quantization calibrated on held-out species: calibration readers, quantizers, accuracy report."""
