"""aelstm-client: talk to an aelstm server as a gateway would (loadtest, replay, score, watch, models)."""
