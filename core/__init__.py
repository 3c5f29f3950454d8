"""The shared core: model bundles, the onnxruntime scoring path, preprocessing, data loading, thresholds and errors.

Server, client and training all build on this package; it never imports torch or the training code, so a serving
host needs neither.
"""
