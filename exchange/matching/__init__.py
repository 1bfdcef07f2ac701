"""The matching worker, the single writer: intake from the queue, the business rules against
in-memory state, the engine, one transaction per batch, then replies and frames."""
