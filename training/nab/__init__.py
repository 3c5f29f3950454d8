"""The Numenta Anomaly Benchmark: corpus loading, the NAB score, and streaming detectors for it."""
