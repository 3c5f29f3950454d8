"""Generated gRPC/protobuf code for the aelstm.v1 API (regenerate with `python protos/generate.py`)."""
