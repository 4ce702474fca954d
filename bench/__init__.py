"""Benchmarks of the exporter against the emulator on loopback: `python -m bench`."""
