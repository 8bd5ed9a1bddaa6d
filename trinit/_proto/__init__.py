"""Generated from proto/sandbox.proto by scripts/gen_proto.py; do not edit."""
