"""HTTP-facing parts of the ml-api: batching, shared checks, API shapes, edge middleware."""

__version__ = "0.1.0"
