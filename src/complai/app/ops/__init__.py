"""The session's operations, one module per area; each class is a part of `Session`."""
