"""The bound on kernel threads, in a module of its own so every user can import it even when
the compiled kernels cannot load (tinygrad_bn._ext refuses on a CPU lacking its target).

MAX_THREADS is the most threads set_num_threads and every --threads option accept: thread
creation fails far beyond it (100000 crashed), and no machine this project runs on has more.
"""

MAX_THREADS = 256
