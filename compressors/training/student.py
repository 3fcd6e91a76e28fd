"""A shallower student: a copy of the teacher with some decoder blocks removed.

The copy keeps every remaining block's weights (the usual initialisation for layer-dropped students:
Sanh et al.'s DistilBERT kept every other layer; ShortGPT and Sheared-LLaMA prune layers of a trained
model), renumbers the attention modules' ``layer_idx`` (the KV cache is indexed by it), and writes the
new depth into the config (``num_hidden_layers``, and ``layer_types`` where the config has one), so the
student saves and loads as a standard checkpoint of the same architecture.

Which layers stay (``rule``):

* ``uniform``: evenly spaced, always keeping the first and the last block;
* ``middle``: drop a contiguous run from the middle (the first and last blocks matter most for LLMs,
  per ShortGPT's layer-importance measurements).
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING

import torch
from torch import nn

from compressors.base import CompressionError
from compressors.layers import find_blocks, set_attribute

if TYPE_CHECKING:  # transformers is imported lazily (it costs seconds); only its types are needed here
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

RULES = ["uniform", "middle"]


def choose_layers(n_layers: int, n_keep: int, rule: str = "uniform") -> list[int]:
    """Indices of the blocks the student keeps, sorted."""
    if not 1 <= n_keep <= n_layers:
        raise CompressionError(f"cannot keep {n_keep} of {n_layers} layers; keep between 1 and {n_layers}")
    if n_keep == n_layers:
        return list(range(n_layers))
    if rule == "uniform":
        if n_keep == 1:
            return [n_layers - 1]
        idx = torch.linspace(0, n_layers - 1, n_keep).round().long().tolist()
        return sorted(set(idx)) if len(set(idx)) == n_keep else list(range(n_keep))
    if rule == "middle":
        n_drop = n_layers - n_keep
        start = (n_layers - n_drop) // 2
        return [i for i in range(n_layers) if not start <= i < start + n_drop]
    raise CompressionError(f"layer rule {rule!r} is not known; choose one of {RULES}")


def drop_layers(model: PreTrainedModel, keep: list[int]) -> PreTrainedModel:
    """A deep copy of ``model`` holding only the blocks ``keep`` (the teacher is not modified)."""
    student = copy.deepcopy(model)
    path, blocks = find_blocks(student)
    kept = nn.ModuleList([blocks[i] for i in keep])
    parent_path, _, name = path.rpartition(".")
    parent = student.get_submodule(parent_path) if parent_path else student
    setattr(parent, name, kept)
    for new_i, block in enumerate(kept):
        for m in block.modules():
            if isinstance(getattr(m, "layer_idx", None), int):
                set_attribute(m, "layer_idx", new_i)
    cfg = student.config.get_text_config() if hasattr(student.config, "get_text_config") else student.config
    old_types = getattr(cfg, "layer_types", None)
    cfg.num_hidden_layers = len(keep)
    if isinstance(old_types, (list, tuple)) and len(old_types) == len(blocks):
        cfg.layer_types = [old_types[i] for i in keep]
    log.info("student keeps layers %s of %d", keep, len(blocks))
    return student
