"""aelstm-client: talk to an aelstm server as a gateway would (loadtest, replay, score, watch, models)."""

import os

# gRPC's C core logs connection failures itself; the client reports them as one line instead.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")
