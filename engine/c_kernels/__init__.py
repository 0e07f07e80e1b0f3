"""C kernels for the CPU path, compiled for this machine on first use (``build``): one ``.c`` file
per kernel beside the module that calls it. Each is an optimized path tested against the PyTorch
reference it replaces; where no C compiler works, the reference runs instead."""
