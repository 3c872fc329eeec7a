"""Measuring models on this machine: bench, measure, quality, quantize."""
