"""The Flower ClientApp: its message handlers, the outbox every reply goes through, and SecAgg+."""
