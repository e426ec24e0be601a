"""Shared test setup: the hypothesis profile, the CUDA skip rule and two small oracles.

The oracles (and the strategy for γ) are written here once, independently of the package (no import
from retnet_ref):
- `naive_retention`: the defining double sum of unnormalised retention, one head, loops only;
- `rel_err`: the project's error measure max |a - b| / max |b| (complex aware, in float64).
Test modules receive them as session fixtures.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import settings
from hypothesis import strategies as st

# Deterministic by default (CI); `HYPOTHESIS_PROFILE=explore` draws fresh examples.
settings.register_profile("retnet", deadline=None, derandomize=True, print_blob=True)
settings.register_profile("explore", deadline=None, derandomize=False, max_examples=300)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "retnet"))

NO_CUDA_REASON = "no CUDA device"

# Without a GPU, Triton kernels (retnet_ref.kernels) run on CPU tensors in Triton's interpreter; the
# variable is read when a kernel module is imported, so it is set before any test imports one.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` are skipped where no CUDA device is present (select them with -m
    cuda)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=NO_CUDA_REASON)
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu")
        x = x.to(torch.complex128 if x.is_complex() else torch.float64).numpy()
    x = np.asarray(x)
    return x.astype(np.complex128 if np.iscomplexobj(x) else np.float64)


def relative_error(a, b) -> float:
    """max |a - b| / max |b| over all entries (b the trusted side); 0-sized inputs give 0."""
    a, b = _as_numpy(a), _as_numpy(b)
    assert a.shape == b.shape, f"shapes differ: {a.shape} vs {b.shape}"
    if b.size == 0:
        return 0.0
    scale = np.abs(b).max()
    return float(np.abs(a - b).max() / (scale if scale > 0 else 1.0))


def naive_retention_loop(q, k, v, gamma, state=None):
    """o_n = Σ_{m≤n} γ^(n-m) (q_n · k_m) v_m + γ^(n+1) q_n S_0, one head, two plain loops.

    q, k (T, d_k) real or complex, v (T, d_v), state (d_k, d_v) or None; "·" has no conjugation.
    γ^p is Python's power of the float γ (independent of the package's exp(p log γ)).
    """
    q, k, v = (np.asarray(x) for x in (q, k, v))
    T, d_v = v.shape
    dtype = np.result_type(q, k, v, np.float64, *(() if state is None else (np.asarray(state),)))
    out = np.zeros((T, d_v), dtype=dtype)
    for n in range(T):
        for m in range(n + 1):
            out[n] += gamma ** (n - m) * np.sum(q[n] * k[m]) * v[m]
        if state is not None:
            out[n] += gamma ** (n + 1) * (q[n] @ np.asarray(state))
    return out


@pytest.fixture(scope="session")
def rel_err():
    return relative_error


@pytest.fixture(scope="session")
def naive_retention():
    return naive_retention_loop


@pytest.fixture(scope="session")
def gamma_strategy():
    """A valid decay γ ∈ (0, 1]: 1 itself (no decay) is drawn on purpose, subnormal values may
    be."""
    return st.one_of(st.just(1.0), st.floats(min_value=0.0, max_value=1.0, exclude_min=True))


def pytest_terminal_summary(terminalreporter):
    """One line that says whether the real-browser tests (marker `browser`) ran, and how they
    ended."""
    outcomes = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            keywords = getattr(report, "keywords", {})
            if "browser" not in keywords or getattr(report, "when", None) is None:
                continue
            if report.when == "call" or report.outcome != "passed":  # skips, errors end at setup
                outcomes[report.nodeid] = report.outcome
    if outcomes:
        ends = list(outcomes.values())
        counts = [f"{ends.count(o)} {o}" for o in ("passed", "failed", "skipped")]
        terminalreporter.write_line("browser tests: " + ", ".join(counts))
