"""The throughput benchmark (benchmarks/throughput.py) by concern: the plan and texts, the model
store, the in-process contenders, HTTP load generation, response checks, the report.
throughput.py is the one entry point."""
