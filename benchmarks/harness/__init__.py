"""What the benchmarks share (processes and ports, machine info, report tables, in-process
runtimes). Every benchmark imports from here; no benchmark imports another one."""
