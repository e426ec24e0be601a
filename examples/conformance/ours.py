"""This package's own retention behind the conformance signature: every row of their reports passes.

    python -m retnet_ref verify --impl examples/conformance/ours.py:forms
"""
from retnet_ref.conformance import Conventions, Implementation
from retnet_ref.normalisation import normalised_retention
from retnet_ref.retention import chunkwise_retention, parallel_retention, recurrent_retention


def stateful(q, k, v, gamma, form, chunk_size=None, state=None):
    """The recurrent and chunkwise forms, which take an initial state and return the final one."""
    if form == "recurrent":
        return recurrent_retention(q, k, v, gamma, state=state)
    return chunkwise_retention(q, k, v, gamma, chunk_size, state=state)


def parallel_only(q, k, v, gamma, form, chunk_size=None, state=None):
    """The parallel form (Eq. 5): no state in, none out."""
    return parallel_retention(q, k, v, gamma)


def normalised(normalisation):
    """normalised_retention in each form, the output alone (its state holds z and n besides S)."""
    def retention(q, k, v, gamma, form, chunk_size=None, state=None):
        return normalised_retention(q, k, v, gamma, mode=form, chunk_size=chunk_size,
                                    normalisation=normalisation)[0]
    return retention


forms = Implementation(stateful, Conventions(forms=("recurrent", "chunkwise")),
                       "ours: recurrent, chunkwise")
parallel = Implementation(parallel_only,
                          Conventions(forms=("parallel",), initial_state=False, final_state=False),
                          "ours: parallel")
# the paper's three normalisations, exact in every form
paper = Implementation(normalised("exact"), Conventions(normalisation="paper", initial_state=False,
                                                         final_state=False),
                       "ours: normalised as the paper")
# the official code's row scales, which differ per form (declared "paper", its report shows why)
torchscale = Implementation(normalised("torchscale"),
                            Conventions(normalisation="torchscale", initial_state=False,
                                                                   final_state=False),
                            "ours: torchscale's scales")
