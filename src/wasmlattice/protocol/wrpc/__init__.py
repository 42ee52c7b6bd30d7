"""wRPC: component invocations between hosts over NATS, and the value codec they use on the wire."""
