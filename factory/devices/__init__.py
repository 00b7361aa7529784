"""What a bundle needs of the machine and runtime that run it.

host_cpu.py  the x86-64 level a CPU library needs and the level this host has
             (`pull -t auto`, `factory run`, the build gate's can-it-run-here)
runtime.py   the runtime a bundle's compatibility key names, in words, and whether a
             user's stated runtime fits it

Pure but for reading /proc/cpuinfo. May import only the shared modules.
"""
