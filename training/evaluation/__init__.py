"""Detection quality: metrics, dataset protocols, the detector line-up and the `aelstm evaluate` report."""
