"""Detectors behind one small contract (`Detector`): the joint AE-LSTM, its ablations, baselines and floors."""
