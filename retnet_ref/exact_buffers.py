"""Float64 tables that live on a module's device but never take its dtype.

The decays log γ and the rotation frequencies θ must stay float64 (positions times log γ or θ are
exact only there), yet they belong on the device, next to the weights, so that a forward pass copies
nothing from the host. A plain buffer would do the first half, but `module.to(torch.bfloat16)` (or
`.half()`, `.float()`) casts every floating buffer. `ExactBuffers` keeps the buffers it registers in
float64 through any such call, while moving them with the module to another device.
"""
from __future__ import annotations

import torch
from torch import nn


class ExactBuffers(nn.Module):
    """An nn.Module whose `register_exact_buffer` buffers follow its device and keep float64."""

    def register_exact_buffer(self, name: str, values):
        """A non-persistent float64 buffer (not in state_dict: it is recomputed from the config)."""
        self.register_buffer(name, torch.as_tensor(values, dtype=torch.float64), persistent=False)
        self.__dict__.setdefault("_exact_buffer_names", set()).add(name)

    def _apply(self, fn, recurse=True):
        exact = {name: self._buffers[name] for name in self.__dict__.get("_exact_buffer_names", ())}
        super()._apply(fn, recurse)
        for name, before in exact.items():
            # the device fn chose, the values and dtype from before
            self._buffers[name] = before.to(self._buffers[name].device)
        return self
