"""Worked examples run from a checkout (python -m retnet_ref verify --impl
examples.conformance.ours:forms).

A regular package, so that this directory is what `import examples` finds from the repository root:
some installed distributions (torchscale 0.3.0, the oracle of tests/test_torchscale.py) ship a
top-level `examples` package of their own, which would otherwise win over a namespace package here.
"""
