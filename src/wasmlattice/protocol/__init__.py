"""The wire vocabulary: control subjects, wire models, CloudEvents, the NATS connection, KV state, wRPC."""
