"""Parsing, chunking and the background ingestion pipeline."""
