"""Token generation shared by every language model of the package (RetNet and the Transformer
baseline).

A model plugs in two functions:

    prefill(prompt (B, T0) long)      -> (last_logits (B, V), state)   # read the whole prompt once
    step(token (B,) long, state)      -> (logits (B, V), state)        # one new token, O(1) for
    RetNet

and `generate_tokens` runs the loop: sample a token from the last logits, feed it back, repeat.

On a GPU a decode step is many small kernels, and launching them from Python costs more than running
them. `GraphedStep` records one step in a CUDA graph and replays it: the whole step becomes one
launch. A graph replays the same kernels on the same memory, so the step must update its state in
place (both models' `decode_step` do: a fixed-size recurrent state, or a preallocated KV cache whose
length is a device tensor) and must not read a tensor's value on the host.
Sampling: temperature 0 is greedy (argmax, ties to the lowest id); otherwise the logits are divided
by the temperature, optionally cut to the top_k largest, and one token is drawn from the softmax
with a seeded torch.Generator, so that the same seed gives the same tokens.
"""
from __future__ import annotations

import numbers
from typing import Any, Callable

import torch

from ._checks import check_positive_int, check_seed, check_token_tensor

Prefill = Callable[[torch.Tensor], tuple[torch.Tensor, Any]]
Step = Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]


def check_sampling(temperature, top_k) -> tuple[float, int | None]:
    """temperature a real number ≥ 0; top_k None or a positive integer."""
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise TypeError(f"temperature must be a real number >= 0, got {type(temperature).__name__}")
    if not float(temperature) >= 0.0:  # also rejects NaN
        raise ValueError(f"temperature must be >= 0, got {temperature!r}")
    return float(temperature), None if top_k is None else check_positive_int(top_k, "top_k")


def sample_next(logits: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of logits (B, V) → (B,) long.

    temperature = 0: argmax. Otherwise softmax(logits / temperature) restricted to the top_k largest
    logits (all of them when top_k is None or ≥ V), sampled with `generator` (which must live on the
    logits' device; None uses torch's global generator). Non-finite logits raise ValueError when
    sampling; greedy decoding leaves that check to generate_tokens, which makes it once, at the end.
    """
    temperature, top_k = check_sampling(temperature, top_k)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError("logits must be a 2-D tensor (B, V), got "
                         f"{getattr(logits, 'shape', type(logits))}")
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    probs = sampling_probabilities(logits, temperature, top_k)        # (B, V)
    if not torch.isfinite(probs).all():                     # one read on the host per sampled token
        raise ValueError("logits must be finite to sample from them: got NaN or inf (non-finite "
                         "weights or inputs?)")
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)   # (B,)


def sampling_probabilities(logits: torch.Tensor, temperature: float,
                           top_k: int | None) -> torch.Tensor:
    """softmax(logits / temperature) over each row's top_k largest logits (all where top_k is None
    or ≥ V): (B, V) float64."""
    # (logits - max) / temperature in float64: any temperature > 0 works, down to the smallest float
    shifted = logits.detach().double() - logits.detach().double().amax(-1, keepdim=True)
    scaled = shifted / temperature                          # (B, V), the largest logit at 0
    if top_k is not None and top_k < scaled.shape[-1]:
        kth_largest = scaled.topk(top_k, dim=-1).values[:, -1:]        # (B, 1)
        scaled = scaled.masked_fill(scaled < kth_largest, float("-inf"))
    return torch.softmax(scaled, dim=-1)                    # (B, V)


def capture_cuda_graph(fn: Callable[[], Any], warmup: int = 2) -> tuple[torch.cuda.CUDAGraph, Any]:
    """fn() recorded in a CUDA graph → (graph, fn's output, which each graph.replay() rewrites).

    fn runs `warmup` times eagerly on a side stream first (lazy initialisation, library workspaces
    and compilation happen outside the graph), then once under capture. A replay reruns the same
    kernels on the same memory, so anything fn updates in place is updated again, and the warm-up
    runs count too.
    """
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        output = fn()
    return graph, output


class GraphedStep:
    """One decode step recorded in a CUDA graph: `graphed(token) -> logits`, replayed in one launch.

    step(token, state) -> (logits, state) must update `state` in place and return it (the same
    object): the graph reads and writes the memory it was captured with. Capturing runs the step
    `warmup` times for real (capture_cuda_graph), so `state` is advanced by those runs: capture on a
    scratch copy or set the position again afterwards when that matters (`generate_tokens` does).
    """

    def __init__(self, step: Step, token: torch.Tensor, state, warmup: int = 2):
        if token.device.type != "cuda":
            raise ValueError(f"a CUDA graph needs CUDA tensors, got a token on {token.device}")
        self.token = token.clone()                                   # (B,) the graph's input buffer
        self.graph, (self.logits, _) = capture_cuda_graph(lambda: step(self.token, state), warmup)

    def __call__(self, token: torch.Tensor) -> torch.Tensor:
        self.token.copy_(token)
        self.graph.replay()
        return self.logits.clone()


def check_cuda_graph(cuda_graph, prompt: torch.Tensor) -> bool:
    """None: on for CUDA prompts, off elsewhere; True requires a CUDA prompt."""
    if cuda_graph is None:
        return prompt.device.type == "cuda"
    if not isinstance(cuda_graph, bool):
        raise TypeError(f"cuda_graph must be None, True or False, got {type(cuda_graph).__name__}")
    if cuda_graph and prompt.device.type != "cuda":
        raise ValueError(f"cuda_graph=True needs a prompt on a CUDA device, got {prompt.device}")
    return cuda_graph


def seeded_generator(seed, device) -> torch.Generator | None:
    """A private generator on device seeded with seed (checked), or None (torch's global one) for
    None."""
    seed = check_seed(seed)
    return None if seed is None else torch.Generator(device=device).manual_seed(seed)


NON_FINITE_LOGITS = ("the model produced non-finite logits (NaN or inf) while generating: its "
                     "weights or inputs hold non-finite values, so the tokens would be meaningless")


def generate_tokens(prefill: Prefill, step: Step, prompt: torch.Tensor, max_new_tokens: int,
                    temperature: float = 0.0, top_k: int | None = None, seed: int | None = None,
                    cuda_graph: bool | None = False, snapshot=None) -> torch.Tensor:
    """Continue prompt (B, T0) by max_new_tokens sampled tokens → (B, T0 + max_new_tokens) long.

    prefill reads the prompt once; step is called once per new token except the last (whose logits
    would go unused). seed=None draws from torch's global generator; an integer seeds a private
    torch.Generator on the prompt's device, so the result is reproducible.
    cuda_graph: replay the step as a CUDA graph (GraphedStep; None = on for a CUDA prompt). The step
    must then update the state in place, and snapshot(state) -> restore() must save what capturing
    advances (capture runs the step on the real state) and put it back.
    """
    temperature, top_k, use_graph, generator = _checked_arguments(
        prompt, max_new_tokens, temperature, top_k, seed, cuda_graph)
    if max_new_tokens == 0:
        return prompt.clone()
    with torch.no_grad():
        logits, state = prefill(prompt)                                # (B, V)
        if use_graph and max_new_tokens > 1:
            step = _graphed(step, state, snapshot, sample_next(logits))
        new, finite = _decode(logits, state, step, max_new_tokens,
                              lambda logits: sample_next(logits, temperature, top_k, generator))
    if not finite:
        raise ValueError(NON_FINITE_LOGITS)
    return torch.cat((prompt, new), dim=1)                             # (B, T0 + new)


def _checked_arguments(prompt, max_new_tokens, temperature, top_k, seed, cuda_graph) -> tuple:
    """generate_tokens' arguments checked, in their order → (temperature, top_k, whether to replay
    a CUDA graph, the generator: seeded_generator's)."""
    temperature, top_k = check_sampling(temperature, top_k)
    if (isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral)
            or max_new_tokens < 0):
        raise ValueError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")
    check_token_tensor(prompt, name="prompt")
    use_graph = check_cuda_graph(cuda_graph, prompt)
    return temperature, top_k, use_graph, seeded_generator(seed, prompt.device)


def _decode(logits, state, step: Step, count: int, sample) -> tuple[torch.Tensor, torch.Tensor]:
    """count tokens sampled from the prefill's logits on, step called after each but the last →
    (tokens (B, count), whether every logit seen was finite: a 0-d bool, read once by the
    caller)."""
    finite = torch.ones((), dtype=torch.bool, device=logits.device)
    tokens = []
    for i in range(count):
        finite &= torch.isfinite(logits).all()
        token = sample(logits)                                         # (B,)
        tokens.append(token[:, None])                                  # (B, 1)
        if i + 1 < count:
            logits, state = step(token, state)
    return torch.cat(tokens, dim=1), finite                            # (B, count)


def _graphed(step: Step, state, snapshot, token: torch.Tensor) -> Step:
    """step as a replayed CUDA graph, the state restored to where prefill left it after
    capturing."""
    if snapshot is None:
        raise ValueError("cuda_graph needs a snapshot function: capturing advances the state")
    restore = snapshot(state)
    graphed = GraphedStep(step, token, state)
    restore()
    return lambda token, state: (graphed(token), state)
