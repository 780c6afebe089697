"""The soak benchmark (benchmarks/soak.py) by concern: its data, the services it starts, the
load it generates, the verification after it and the report. soak.py is the one entry point."""
