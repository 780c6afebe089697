"""What the benchmarks share (processes and ports, the ml-api + backend stack, machine info,
report tables, BEIR helpers, in-process runtimes) and the parts of the two largest benchmarks
(`soak/`, `throughput/`). Every benchmark imports from here; no benchmark imports another one."""
