"""The vocabulary of an evidence row's structured fields: recipe ids and model families.

An evidence row may name the recipe it measures (``recipe: gptq-w4a16-g128``) and the family of the
model (``family: llama-2``), so the quality estimate (``engine.quality``) can match a recipe's own
rows first and prefer rows of the user's model family. Both are closed lists, so a typo
(``llama2``, ``gptq-w4-g128``) fails when the file loads instead of silently matching nothing.

Recipe ids come from the recipes' data files (``knowledge/data/recipes/*.yaml``, the registry that
``knowledge.recipes`` validates); model families are the ``family`` values of the bundled model shapes.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

RECIPES_DIR = Path(__file__).resolve().parent / "data" / "recipes"

#: Model families evidence rows are tagged with (``ModelShape.family`` uses the same spelling).
#: A generation is its own family (Llama 2 and Llama 3 differ in tokenizer, data and how well they
#: quantize, so rows of one are only a fallback for the other); point releases share their
#: generation's family (Llama 3.1 and 3.3 are ``llama-3``).
MODEL_FAMILIES: frozenset[str] = frozenset(
    {
        "llama-1",
        "llama-2",
        "llama-3",
        "opt",
        "bloom",
        "falcon",
        "mistral",
        "mixtral",
        "qwen",
        "qwen1.5",
        "qwen2",
        "qwen2.5",
        "qwen3",
        "gemma",
        "gemma-2",
        "phi-2",
        "phi-3",
        "vicuna",
        "gpt-2",
        "pythia",
        "mpt",
        "deepseek",
        "smollm2",
        "granite",
        "yi",
        "command-r",
        "gpt-j",
    }
)


@lru_cache(maxsize=1)
def recipe_methods() -> dict[str, str]:
    """Recipe id -> the id of the method it belongs to, read from the recipes' data files.

    Only ``id`` and ``method`` are read here (the rows are validated before the recipes, and the full
    recipe schema lives in ``knowledge.recipes``, checked by the loader); an entry without them is
    skipped here and reported by the loader.
    """
    out: dict[str, str] = {}
    for path in sorted(RECIPES_DIR.glob("*.yaml")):
        with path.open(encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
        entries = data.get("recipes") if isinstance(data, dict) else None
        for entry in entries if isinstance(entries, list) else []:
            if (
                isinstance(entry, dict)
                and isinstance(entry.get("id"), str)
                and isinstance(entry.get("method"), str)
            ):
                out[entry["id"]] = entry["method"]
    return out


def recipe_ids() -> frozenset[str]:
    """Every recipe id an evidence row may name."""
    return frozenset(recipe_methods())
