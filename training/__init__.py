"""Training side of aelstm: data loading, preprocessing, the joint AE-LSTM, calibration and the model bundle.

Only `model`, `train` and `export` import torch; everything the serving path needs (`preprocess`, `bundle`,
`runtime`) is torch-free so a scoring node can run with onnxruntime alone.
"""
