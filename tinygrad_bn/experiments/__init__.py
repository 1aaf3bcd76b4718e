"""The paper's experiments: ``fig1`` (Section 4.1, Figure 1) and ``claims`` (Section 4.2, Table 2).

Each has ``run(config, out_dir, ...)`` returning the results dict it also writes to
``out_dir/results.json`` (with a figure and ``report.md``); ``tinygrad_bn.cli`` wraps them.
"""
