"""Record and replay of component invocations (docs/record-replay.md)."""
