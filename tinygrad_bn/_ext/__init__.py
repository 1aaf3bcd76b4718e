# The compiled kernels (built from ext/*.pyx); import them through tinygrad_bn.kernels.

# The most threads set_num_threads and every --threads option accept: thread creation fails
# far beyond it (100000 crashed), and no machine this project runs on has more cores.
MAX_THREADS = 256
