"""The parts of :class:`skdict.DoubleBatchKSVD` below its fit loop.

``start``: atom groups, the memory check and the initial atoms; ``schedule``:
minibatches and convergence; ``encoder``: coding with nested atom groups;
``reseed``: replacing unused and duplicated atoms; ``state``: what a callback
sees after each iteration. The compute kernels (pursuit, atom updates) are in
:mod:`skdict._backend`.
"""
