"""Bad input fails early, with the right exception type and a message that names the argument.

One test per bad-input case, for every form it applies to: the NumPy reference (2-D, one head) and
the torch forms (4-D, one γ per head). Device mismatches use the "meta" device here, so they run
without a GPU; tests/test_cuda.py repeats them with real CUDA tensors.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from retnet_ref import cost, reference
from retnet_ref.decay import gamma_schedule
from retnet_ref.generation import sample_next
from retnet_ref.layers import FeedForward, MultiScaleRetention
from retnet_ref.model import RetNet, RetNetConfig
from retnet_ref.retention import chunkwise_retention, parallel_retention, recurrent_retention
from retnet_ref.transformer import TransformerConfig

# ---------------------------------------------------------------- the NumPy reference

NUMPY_FORMS = {
    "parallel": lambda q, k, v, gamma=0.9, chunk_size=2,
               state=None: reference.parallel(q, k, v, gamma),
    "recurrent": lambda q, k, v, gamma=0.9, chunk_size=2,
               state=None: reference.recurrent(q, k, v, gamma, state),
    "chunkwise": lambda q, k, v, gamma=0.9, chunk_size=2, state=None:
        reference.chunkwise(q, k, v, gamma, chunk_size, state),
}
STATEFUL = ["recurrent", "chunkwise"]


def np_inputs(T=5, d_k=3, d_v=2):
    rng = np.random.default_rng(0)
    return rng.standard_normal((T, d_k)), rng.standard_normal((T,
                                                               d_k)), rng.standard_normal((T, d_v))


@pytest.mark.parametrize("form", NUMPY_FORMS)
def test_numpy_q_and_k_with_different_key_dimension(form):
    q, k, v = np_inputs()
    with pytest.raises(ValueError, match="^q and k must have the same shape"):
        NUMPY_FORMS[form](q, k[:, :2], v)


@pytest.mark.parametrize("form", NUMPY_FORMS)
def test_numpy_q_and_k_with_different_length(form):
    q, k, v = np_inputs()
    with pytest.raises(ValueError, match="^q and k must have the same shape"):
        NUMPY_FORMS[form](q, k[:4], v)


@pytest.mark.parametrize("form", NUMPY_FORMS)
def test_numpy_v_with_another_length(form):
    q, k, v = np_inputs()
    with pytest.raises(ValueError, match="^v must have as many rows"):
        NUMPY_FORMS[form](q, k, v[:4])


@pytest.mark.parametrize("ndim", [1, 3])
@pytest.mark.parametrize("name", ["q", "k", "v"])
@pytest.mark.parametrize("form", NUMPY_FORMS)
def test_numpy_arrays_that_are_not_2d(form, name, ndim):
    args = dict(zip("qkv", np_inputs()))
    args[name] = args[name][:, 0] if ndim == 1 else args[name][None]
    with pytest.raises(ValueError, match=f"^{name} must be 2-D"):
        NUMPY_FORMS[form](**args)


@pytest.mark.parametrize("name", ["q", "k", "v"])
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.bool_])
@pytest.mark.parametrize("form", NUMPY_FORMS)
def test_numpy_integer_or_bool_dtype(form, dtype, name):
    args = dict(zip("qkv", np_inputs()))
    args[name] = np.ones(args[name].shape, dtype=dtype)
    with pytest.raises(TypeError, match=f"^{name} must hold floating or complex numbers"):
        NUMPY_FORMS[form](**args)


@pytest.mark.parametrize("gamma", [0.0, -0.1, 1.5, float("nan"), float("inf")])
@pytest.mark.parametrize("form", NUMPY_FORMS)
def test_numpy_gamma_outside_the_unit_interval(form, gamma):
    with pytest.raises(ValueError, match=r"^gamma must lie in \(0, 1\]"):
        NUMPY_FORMS[form](*np_inputs(), gamma=gamma)


@pytest.mark.parametrize("gamma", ["0.5", None, True, [0.9], 0.9 + 0j])
@pytest.mark.parametrize("form", NUMPY_FORMS)
def test_numpy_gamma_that_is_not_a_real_number(form, gamma):
    with pytest.raises(TypeError, match="^gamma must be a real number"):
        NUMPY_FORMS[form](*np_inputs(), gamma=gamma)


@pytest.mark.parametrize("chunk_size", [True, 2.0, 2.5, "2", None])
def test_numpy_chunk_size_that_is_not_an_integer(chunk_size):
    with pytest.raises(TypeError, match="^chunk_size must be a positive integer"):
        reference.chunkwise(*np_inputs(), 0.9, chunk_size)


@pytest.mark.parametrize("chunk_size", [0, -1, -64])
def test_numpy_chunk_size_that_is_not_positive(chunk_size):
    with pytest.raises(ValueError, match="^chunk_size must be a positive integer"):
        reference.chunkwise(*np_inputs(), 0.9, chunk_size)


@pytest.mark.parametrize("shape", [(2, 3), (3, 3), (3,), (1, 3, 2)])
@pytest.mark.parametrize("form", STATEFUL)
def test_numpy_state_of_the_wrong_shape(form, shape):
    with pytest.raises(ValueError, match=r"^state must have shape \(d_k, d_v\) = \(3, 2\)"):
        NUMPY_FORMS[form](*np_inputs(), state=np.zeros(shape))


@pytest.mark.parametrize("form", STATEFUL)
def test_numpy_state_of_integer_dtype(form):
    with pytest.raises(TypeError, match="^state must hold floating or complex numbers"):
        NUMPY_FORMS[form](*np_inputs(), state=np.zeros((3, 2), dtype=np.int64))


@pytest.mark.parametrize("shape", [(2, 2), (3, 2), (3,)])
def test_linear_recurrence_with_a_matrix_of_the_wrong_shape(shape):
    with pytest.raises(ValueError, match="^A must be square"):
        reference.linear_recurrence(*np_inputs(), np.full(shape, 0.5))


@pytest.mark.parametrize("shape", [(2,), (4,), (3, 3)])
def test_diagonal_recurrence_with_eigenvalues_of_the_wrong_shape(shape):
    with pytest.raises(ValueError, match="^eigenvalues must have shape"):
        reference.diagonal_recurrence(*np_inputs(), np.full(shape, 0.5))


# ---------------------------------------------------------------- the torch forms

TORCH_FORMS = {
    "parallel": lambda q, k, v, gamma=(0.9, 0.5), chunk_size=2,
               state=None: parallel_retention(q, k, v, gamma),
    "recurrent": lambda q, k, v, gamma=(0.9, 0.5), chunk_size=2, state=None:
        recurrent_retention(q, k, v, gamma, state=state),
    "chunkwise": lambda q, k, v, gamma=(0.9, 0.5), chunk_size=2, state=None:
        chunkwise_retention(q, k, v, gamma, chunk_size, state=state),
}


def torch_inputs(B=1, H=2, T=5, d_k=3, d_v=2, dtype=torch.float64):
    gen = torch.Generator().manual_seed(0)
    return tuple(torch.randn(B, H, T, d, generator=gen, dtype=dtype) for d in (d_k, d_k, d_v))


def torch_state(B=1, H=2, d_k=3, d_v=2, **kwargs):
    return torch.zeros(B, H, d_k, d_v, **kwargs)


@pytest.mark.parametrize("name", ["q", "k", "v"])
@pytest.mark.parametrize("form", TORCH_FORMS)
def test_torch_inputs_that_are_not_tensors(form, name):
    args = dict(zip("qkv", torch_inputs()))
    args[name] = args[name].numpy()
    with pytest.raises(TypeError, match=f"^{name} must be a torch.Tensor"):
        TORCH_FORMS[form](**args)


@pytest.mark.parametrize("bad_k", ["d_k", "T", "H", "B"])
@pytest.mark.parametrize("form", TORCH_FORMS)
def test_torch_q_and_k_of_different_shapes(form, bad_k):
    q, _, v = torch_inputs()
    k = torch_inputs(**{"B": 1, "H": 2, "T": 5, "d_k": 3, bad_k: 4})[1]
    with pytest.raises(ValueError, match=r"^q and k must have the same shape \(B, H, T, d_k\)"):
        TORCH_FORMS[form](q, k, v)


@pytest.mark.parametrize("bad_v", ["T", "H", "B"])
@pytest.mark.parametrize("form", TORCH_FORMS)
def test_torch_v_that_does_not_match_q(form, bad_v):
    q, k, _ = torch_inputs()
    v = torch_inputs(**{"B": 1, "H": 2, "T": 5, bad_v: 4})[2]
    with pytest.raises(ValueError, match=r"^v must match q in \(B, H, T\)"):
        TORCH_FORMS[form](q, k, v)


@pytest.mark.parametrize("ndim", [3, 5, 2])
@pytest.mark.parametrize("name", ["q", "k", "v"])
@pytest.mark.parametrize("form", TORCH_FORMS)
def test_torch_tensors_that_are_not_4d(form, name, ndim):
    args = dict(zip("qkv", torch_inputs()))
    x = args[name]
    args[name] = {3: x[0], 5: x[None], 2: x[0, 0]}[ndim]
    with pytest.raises(ValueError, match=f"^{name} must be 4-D"):
        TORCH_FORMS[form](**args)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex128,
                                   torch.float8_e4m3fn])
@pytest.mark.parametrize("name", ["q", "k", "v"])
@pytest.mark.parametrize("form", TORCH_FORMS)
def test_torch_integer_bool_or_complex_dtype(form, name, dtype):
    args = dict(zip("qkv", torch_inputs()))
    args[name] = torch.ones(args[name].shape).to(dtype)
    with pytest.raises(TypeError, match=f"^{name} must have a real floating dtype"):
        TORCH_FORMS[form](**args)


@pytest.mark.parametrize("dtypes", [(torch.float64, torch.float32, torch.float64),
                                    (torch.float32, torch.float32, torch.bfloat16),
                                    (torch.bfloat16, torch.float32, torch.float32)], ids=str)
@pytest.mark.parametrize("form", TORCH_FORMS)
def test_torch_q_k_v_of_mixed_dtypes(form, dtypes):
    q, k, v = (x.to(dt) for x, dt in zip(torch_inputs(), dtypes))
    with pytest.raises(TypeError, match="^q, k and v must share one dtype"):
        TORCH_FORMS[form](q, k, v)


@pytest.mark.parametrize("gamma", [(0.9,), (0.9, 0.5, 0.1), ()],
                         ids=["1 for 2 heads", "3 for 2 heads", "empty"])
@pytest.mark.parametrize("form", TORCH_FORMS)
def test_torch_gamma_list_whose_length_is_not_the_number_of_heads(form, gamma):
    with pytest.raises(ValueError, match="^gamma must hold one value per head: expected length 2"):
        TORCH_FORMS[form](*torch_inputs(), gamma=gamma)


@pytest.mark.parametrize("form", TORCH_FORMS)
def test_torch_gamma_of_two_dimensions(form):
    with pytest.raises(ValueError, match="^gamma must hold one value per head"):
        TORCH_FORMS[form](*torch_inputs(), gamma=[[0.9, 0.5]])


@pytest.mark.parametrize("gamma", [0.9, 1, np.float64(0.5)], ids=["float", "int", "numpy scalar"])
@pytest.mark.parametrize("form", TORCH_FORMS)
def test_torch_gamma_as_one_number_instead_of_a_list(form, gamma):
    with pytest.raises(TypeError, match="^gamma must be a sequence of 2 values .* got one number"):
        TORCH_FORMS[form](*torch_inputs(), gamma=gamma)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan"), float("inf")])
@pytest.mark.parametrize("form", TORCH_FORMS)
def test_torch_gamma_outside_the_unit_interval(form, bad):
    with pytest.raises(ValueError,
                       match=r"^gamma must lie in \(0, 1\] for every head.*at heads \[1\]"):
        TORCH_FORMS[form](*torch_inputs(), gamma=[0.9, bad])


@pytest.mark.parametrize("form", TORCH_FORMS)
def test_torch_gamma_tensor_outside_the_unit_interval(form):
    with pytest.raises(ValueError, match=r"^gamma must lie in \(0, 1\]"):
        TORCH_FORMS[form](*torch_inputs(), gamma=torch.tensor([1.5, 0.5]))


@pytest.mark.parametrize("form", TORCH_FORMS)
def test_torch_gamma_of_strings(form):
    with pytest.raises(TypeError, match="^gamma must be a sequence of real numbers"):
        TORCH_FORMS[form](*torch_inputs(), gamma=["a", "b"])


@pytest.mark.parametrize("chunk_size", [True, 2.0, 2.5, "2", None, torch.tensor(2)])
def test_torch_chunk_size_that_is_not_an_integer(chunk_size):
    with pytest.raises(TypeError, match="^chunk_size must be a positive integer"):
        chunkwise_retention(*torch_inputs(), [0.9, 0.5], chunk_size)


@pytest.mark.parametrize("chunk_size", [0, -1, -64])
def test_torch_chunk_size_that_is_not_positive(chunk_size):
    with pytest.raises(ValueError, match="^chunk_size must be a positive integer"):
        chunkwise_retention(*torch_inputs(), [0.9, 0.5], chunk_size)


@pytest.mark.parametrize("shape", [(1, 2, 2, 3), (1, 1, 3, 2), (2, 2, 3, 2), (2, 3, 2),
                                   (1, 2, 3, 2, 1)])
@pytest.mark.parametrize("form", ["recurrent", "chunkwise"])
def test_torch_state_of_the_wrong_shape(form, shape):
    with pytest.raises(ValueError,
                       match=r"^state must have shape \(B, H, d_k, d_v\) = \(1, 2, 3, 2\)"):
        TORCH_FORMS[form](*torch_inputs(), state=torch.zeros(shape, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.int64, torch.complex128])
@pytest.mark.parametrize("form", ["recurrent", "chunkwise"])
def test_torch_state_of_a_non_real_float_dtype(form, dtype):
    with pytest.raises(TypeError, match="^state must have a real floating dtype"):
        TORCH_FORMS[form](*torch_inputs(), state=torch_state(dtype=dtype))


@pytest.mark.parametrize("form", ["recurrent", "chunkwise"])
def test_torch_state_that_is_not_a_tensor(form):
    with pytest.raises(TypeError, match="^state must be a torch.Tensor or None"):
        TORCH_FORMS[form](*torch_inputs(), state=np.zeros((1, 2, 3, 2)))


@pytest.mark.parametrize("form", ["recurrent", "chunkwise"])
def test_torch_state_on_another_device(form):
    with pytest.raises(ValueError, match="^state must be on the inputs' device cpu, got meta"):
        TORCH_FORMS[form](*torch_inputs(), state=torch_state(dtype=torch.float64, device="meta"))


@pytest.mark.parametrize("name", ["q", "k", "v"])
@pytest.mark.parametrize("form", TORCH_FORMS)
def test_torch_q_k_v_on_different_devices(form, name):
    args = dict(zip("qkv", torch_inputs()))
    args[name] = args[name].to("meta")
    with pytest.raises(ValueError, match="^q, k and v must be on one device"):
        TORCH_FORMS[form](**args)


@pytest.mark.parametrize("form", ["recurrent", "chunkwise"])
def test_torch_bad_input_is_caught_before_any_work_even_for_empty_sequences(form):
    q, k, v = torch_inputs(T=0)
    with pytest.raises(ValueError, match="^state must have shape"):
        TORCH_FORMS[form](q, k, v, state=torch_state(d_k=4, dtype=torch.float64))
    with pytest.raises(ValueError, match="^gamma must lie"):
        TORCH_FORMS[form](q, k, v, gamma=[0.0, 0.5])


@pytest.mark.parametrize("gamma", [np.array([0.9 + 0.1j, 0.5]), torch.tensor([0.9 + 0.1j, 0.5])],
                         ids=["ndarray", "tensor"])
@pytest.mark.parametrize("form", TORCH_FORMS)
def test_complex_gamma_is_rejected_with_where_the_rotation_belongs(form, gamma):
    with pytest.raises(TypeError,
                       match="^gamma must .* the rotation e\\^\\{iθ\\} is applied to q and k"):
        TORCH_FORMS[form](*torch_inputs(), gamma=gamma)


def test_complex_state_is_rejected_by_normalised_retention():
    from retnet_ref.normalisation import normalised_retention
    from retnet_ref.state import RetentionState

    q = torch.randn(1, 2, 3, 4, dtype=torch.float64)
    state = RetentionState(torch.zeros(1, 2, 4, 4, dtype=torch.complex128),
                           torch.zeros(1, 2, 4, dtype=torch.complex128), 0)
    with pytest.raises(TypeError, match="^state.S and state.z must have a real floating dtype"):
        normalised_retention(q, q, q, [0.9, 0.5], "recurrent", state=state)


@pytest.mark.parametrize("x", [torch.ones(1, 3, 4, dtype=torch.int64), np.ones((3, 4),
                                                                               dtype=np.int64)],
                         ids=["tensor", "ndarray"])
def test_rotating_integers_is_an_error(x):
    from retnet_ref.rotation import rotate, theta_schedule

    with pytest.raises(TypeError, match="^x must .*floating"):
        rotate(x, theta_schedule(4), 1)


@pytest.mark.parametrize("base", [1.0, 0.5, -2.0, float("nan"), True])
def test_theta_base_must_exceed_one(base):
    from retnet_ref.rotation import theta_schedule

    with pytest.raises(ValueError, match="^base must be a real number > 1"):
        theta_schedule(8, base)


@pytest.mark.parametrize("gamma", [0.0, 1.5, -0.5, float("nan"), [0.9, 2.0]])
def test_effective_memory_needs_gamma_in_the_unit_interval(gamma):
    from retnet_ref.decay import effective_memory

    with pytest.raises(ValueError, match="^gamma must lie in \\(0, 1\\]"):
        effective_memory(gamma)


# ---------------------------------------------------------------- the models and the config: every
# error names its argument


def _models():
    from retnet_ref.model import RetNet, RetNetConfig
    from retnet_ref.transformer import Transformer, TransformerConfig
    return {"retnet": RetNet(RetNetConfig()), "transformer": Transformer(TransformerConfig())}


@pytest.mark.parametrize("kind", ["retnet", "transformer"])
@pytest.mark.parametrize("tokens, error, message", [
    (torch.zeros(0, 5, dtype=torch.long), ValueError, "at least one sequence"),
    (torch.zeros(1, 5, dtype=torch.int16), TypeError, "dtype torch.long"),
    (torch.zeros(1, 5, dtype=torch.uint8), TypeError, "dtype torch.long"),
    (torch.zeros(1, 5), TypeError, "dtype torch.long"),
    ([[1, 2]], TypeError, "torch.long tensor"),
    (torch.tensor([[0, 999]]), ValueError, "token ids in \\[0, vocab_size=256\\)"),
])
def test_both_models_reject_bad_tokens_alike(kind, tokens, error, message):
    model = _models()[kind]
    with pytest.raises(error, match=f"^tokens must .*{message}"):
        model(tokens)


@pytest.mark.parametrize("overrides, error, message", [
    (dict(gamma=0.9), TypeError, "^gamma must be a sequence of 2 values"),
    (dict(gamma=(0.9 + 0.1j, 0.8)), TypeError, "rotation e\\^\\{iθ\\} is applied to q and k"),
    (dict(gamma=(0.9, 1.5)), ValueError, "^gamma"),
    (dict(embed_scale=float("nan")), ValueError, "^embed_scale must be a finite number > 0"),
    (dict(embed_scale="2"), ValueError, "^embed_scale"),
])
def test_config_rejects_bad_gamma_and_embed_scale(overrides, error, message):
    from retnet_ref.model import RetNetConfig
    with pytest.raises(error, match=message):
        RetNetConfig(**overrides)


def test_gamma_tensors_that_cannot_be_fixed_decays():
    q = torch.randn(1, 2, 5, 4)
    with pytest.raises(TypeError, match="^gamma requires grad"):
        parallel_retention(q, q, q, torch.tensor([0.9, 0.8], requires_grad=True))
    with pytest.raises(ValueError, match="^gamma is on the meta device"):
        parallel_retention(q, q, q, torch.tensor([0.9, 0.8], device="meta"))


def test_reference_inputs_named():
    with pytest.raises(ValueError, match="^q must be a rectangular"):
        reference.parallel([[1.0, 2.0], [3.0]], [[1.0, 2.0], [3.0, 4.0]], [[1.0], [2.0]], 0.9)
    with pytest.raises(TypeError, match="^q requires grad"):
        reference.parallel(torch.randn(3, 2, requires_grad=True), torch.randn(3, 2),
                           torch.randn(3, 2), 0.9)


def test_a_layer_refuses_input_of_another_dtype():
    from retnet_ref.layers import MultiScaleRetention
    with pytest.raises(
        TypeError, match="^x is torch.float64 on cpu but the layer's weights are torch.float32"
    ):
        MultiScaleRetention(8, 2)(torch.randn(1, 3, 8, dtype=torch.float64))


@pytest.mark.parametrize("seed", [-1, 1.5, "a", True])
def test_generate_rejects_bad_seeds(seed):
    model = _models()["retnet"]
    with pytest.raises(ValueError, match="^seed must be None or an integer"):
        model.generate(torch.zeros(1, 3, dtype=torch.long), 2, temperature=1.0, seed=seed)


# ---------------------------------------------------------------- float16 range and the parallel
# form's memory


@pytest.mark.parametrize("form", ["parallel", "chunkwise", "recurrent"])
def test_float16_scores_beyond_its_range_do_not_overflow(form):
    """q·k = 4·300² = 360,000 > 65,504 (float16's largest number) while every input and output is
    representable. The scores are formed in float32, so each form matches the float64 result of the
    float16-rounded inputs to within two float16 roundings of the output (2^-10 relative)."""
    q = torch.full((1, 1, 6, 4), 300.0)
    k = torch.full((1, 1, 6, 4), 300.0) * torch.linspace(0.5, 1.0, 6)[None, None, :, None]
    v = torch.randn(1, 1, 6, 3, generator=torch.Generator().manual_seed(0)) * 1e-3
    gamma = [0.9]
    run = {"parallel": lambda *x: parallel_retention(*x, gamma),
           "chunkwise": lambda *x: chunkwise_retention(*x, gamma, 4)[0],
           "recurrent": lambda *x: recurrent_retention(*x, gamma)[0]}[form]
    half = [x.half() for x in (q, k, v)]
    truth = parallel_retention(*(x.double() for x in half), gamma)
    out = run(*half)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    assert ((out.double() - truth).abs().max() / truth.abs().max()).item() < 2 ** -10


def test_the_parallel_form_refuses_scores_that_cannot_fit(monkeypatch):
    from retnet_ref import retention
    monkeypatch.setattr(retention, "available_bytes", lambda device: 1000)
    q = torch.randn(1, 2, 20, 4)                            # scores: 1·2·20·20 float32 = 3200 bytes
    with pytest.raises(MemoryError,
                       match=r"needs .* GiB for its \(B, H, T, T\) = \(1, 2, 20, 20\)"):
        parallel_retention(q, q, q, [0.9, 0.8])
    chunkwise_retention(q, q, q, [0.9, 0.8], 8)             # linear memory: not refused


# ---------------------------------------------------------------- sizes and counts: one rule
# everywhere

SIZE_ARGUMENTS = {
    "RetNetConfig d_model": lambda n: RetNetConfig(d_model=n),
    "RetNetConfig num_layers": lambda n: RetNetConfig(num_layers=n),
    "TransformerConfig d_model": lambda n: TransformerConfig(d_model=n),
    "MultiScaleRetention num_heads": lambda n: MultiScaleRetention(64, n),
    "FeedForward ffn_dim": lambda n: FeedForward(64, n),
    "TransformerConfig num_heads": lambda n: TransformerConfig(num_heads=n),
    "parallel_cost length": lambda n: cost.parallel_cost(n, 4, 4),
    "gamma_schedule num_heads": lambda n: gamma_schedule(n),
    "sample_next top_k": lambda n: sample_next(torch.zeros(1, 4), 1.0, top_k=n),
}


@pytest.mark.parametrize("make", SIZE_ARGUMENTS.values(), ids=SIZE_ARGUMENTS.keys())
@pytest.mark.parametrize("value", [2.0, True, "2"])
def test_a_size_that_is_not_an_integer_is_a_type_error(make, value):
    with pytest.raises(TypeError, match="must be a positive integer, got"):
        make(value)


@pytest.mark.parametrize("make", SIZE_ARGUMENTS.values(), ids=SIZE_ARGUMENTS.keys())
@pytest.mark.parametrize("value", [0, -3])
def test_a_size_below_one_is_a_value_error(make, value):
    with pytest.raises(ValueError, match="must be a positive integer, got"):
        make(value)


# ---------------------------------------------------------------- booleans are not decays

BOOLEAN_GAMMAS = {"list": [True, True], "mixed tuple": (True, 0.5),
                  "NumPy bool array": np.array([True, True]),
                  "torch bool tensor": torch.tensor([True, True])}


@pytest.mark.parametrize("gamma", BOOLEAN_GAMMAS.values(), ids=BOOLEAN_GAMMAS.keys())
@pytest.mark.parametrize("form", TORCH_FORMS)
def test_torch_gamma_of_booleans(form, gamma):
    """True is the number 1 to Python and NumPy, but never a decay here: refused in every
    container."""
    with pytest.raises(TypeError, match="^gamma must"):
        TORCH_FORMS[form](*torch_inputs(), gamma=gamma)


@pytest.mark.parametrize("gamma", BOOLEAN_GAMMAS.values(), ids=BOOLEAN_GAMMAS.keys())
def test_model_gamma_of_booleans(gamma):
    with pytest.raises(TypeError, match="^gamma must"):
        RetNetConfig(gamma=gamma)


# every string option of the package, through its public entry point: name → a call taking it
SELECTORS = {
    "activation": lambda v: RetNetConfig(vocab_size=16, d_model=8, num_heads=2, activation=v),
    "variant": lambda v: RetNetConfig(vocab_size=16, d_model=8, num_heads=2, variant=v),
    "normalisation": lambda v: MultiScaleRetention(8, 2, normalisation=v),
    "head_norm": lambda v: MultiScaleRetention(8, 2, head_norm=v, group_norm=False),
    "backend": lambda v: MultiScaleRetention(8, 2, backend=v),
    "kind": lambda v: gamma_schedule(4, kind=v),
    "mode": lambda v: RetNet(RetNetConfig(vocab_size=16, d_model=8, num_heads=2))(
        torch.zeros(1, 3, dtype=torch.long), mode=v),
    "preset name": lambda v: RetNetConfig.preset(v),
}


@pytest.mark.parametrize("value", ["nope", "", ["layernorm"], 3])
@pytest.mark.parametrize("name", SELECTORS)
def test_every_string_option_names_itself_and_its_choices_whatever_the_bad_value(name, value):
    # a list is unhashable: `in` a dict's keys would raise a bare TypeError
    with pytest.raises(ValueError, match=rf"^{name} must be one of \(.*\), got "):
        SELECTORS[name](value)


@pytest.mark.parametrize("make", [
    lambda v: RetNetConfig(vocab_size=16, d_model=8, num_heads=2, detach_normaliser=v),
    lambda v: MultiScaleRetention(8, 2, detach_normaliser=v)])
@pytest.mark.parametrize("value", ["no", 0, 1.0])
def test_detach_normaliser_is_true_or_false_not_anything_truthy(make, value):
    with pytest.raises(ValueError, match="detach_normaliser must be True or False"):
        make(value)
