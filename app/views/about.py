"""About: the paper's classification and claims in plain words, the recommender's rules, and how to add
a method to the knowledge base."""

from __future__ import annotations

import typing

import pandas as pd
import streamlit as st
import yaml
from pydantic import BaseModel

from app import state
from knowledge.recipes import Recipe
from knowledge.schema import Method

st.title("About Shrinkwise")
st.markdown(
    "Shrinkwise helps decide **how to compress a large language model**. It is built on one idea from "
    "F. A. Bayazitov, *Systematization of methods for compression of large language models by phase of "
    "application and nature of impact* (Modern Science: Actual Problems of Theory and Practice, 2026, "
    "No. 01, pp. 59-63, [doi:10.37882/2223-2966.2026.01.09](https://doi.org/10.37882/2223-2966.2026.01.09)): "
    "sort every method by **when** it acts and by **how long** its effect lasts."
)

st.header("The classification")
c1, c2 = st.columns(2)
with c1:
    st.markdown(
        "**Phase of application**: when in the model's life the compression happens.\n"
        "1. *Pre-training*: built into training the model from scratch (e.g. sparse pre-training, "
        "mixture of experts).\n"
        "2. *Post-training*: applied to a finished model, no further training (e.g. GPTQ, SpQR).\n"
        "3. *Fine-tuning*: combined with adapting the model to a task (e.g. LLM-Pruner with recovery "
        "training, distillation).\n"
        "4. *Inference*: happens while an answer is generated (e.g. token pruning, CPU runtimes)."
    )
with c2:
    st.markdown(
        "**Nature of impact**: how long the change lasts.\n"
        "- *Static*: weights or structure are changed for good. The saving is fixed and predictable; "
        "the original model is gone (keeping it means storing two copies).\n"
        "- *Dynamic*: computation adapts to each input during one pass. The original weights stay "
        "untouched and usable; the saving depends on the hardware and on the request."
    )

st.header("What the paper claims, in plain words")
claims = [
    (
        "Static = predictable, but the model changes",
        "Static methods give a predictable resource saving, but they modify the model irreversibly.",
    ),
    (
        "Dynamic = compatible, but it depends",
        "Dynamic methods keep the original weights; their benefit shows only at inference and depends on "
        "the hardware and on the input.",
    ),
    (
        "Later phase, more adaptive, less predictable",
        "The closer a method's phase is to inference, the more adaptive and the less predictable its gain.",
    ),
    ("The central trade-off", "Structural robustness (predictability) versus contextual adaptivity."),
    (
        "Practical guidance",
        "If the model cannot be fine-tuned or modified after deployment, prefer dynamic methods despite their "
        "hardware dependence; if fine-tuning resources exist, static methods give a more stable saving.",
    ),
    (
        "Post-training quantization needs the right engine",
        "SpQR and GPTQ cut memory sharply with minimal quality loss, but need an inference engine that "
        "runs their format.",
    ),
    (
        "The gap",
        "Among the reviewed works there are no dynamic methods at pre-training or post-training: "
        "architectures trained with a potential for dynamic compression are the open direction.",
    ),
    ("Where research is", "Work concentrates on the late phases: fine-tuning and inference."),
]
for i, (head, text) in enumerate(claims, 1):
    st.markdown(f"**{i}. {head}.** {text}")

st.header("What the recommender ranks: recipes")
st.markdown(
    "A **method** is an idea with a place on the map (GPTQ, AWQ, FP8, LazyLLM). A **recipe** is what an "
    "engineer deploys: a method with a concrete configuration (GPTQ W4A16 g128, FP8 W8A8 dynamic, GGUF "
    "Q4_K_M, FP8 KV cache), its stored bits per weight with scales and zeros counted, the tensors it keeps "
    "in 16 bits, its output format, the engines that load it, the hardware it needs (minimum NVIDIA "
    "compute capability, FP8, Marlin, AMX, Metal...), its calibration and training needs, and the "
    "commands that produce and serve it. Every recipe belongs to a method, so to a cell of the map."
)
st.markdown(
    "**How the estimate is made.** *Memory* comes from the model's shape (layers, widths, heads, "
    "vocabulary, tied embeddings: a bundled model, a `config.json` or a hub id): linear weights at the "
    "recipe's bits, the kept tensors at theirs, plus the **KV cache** for your context length × batch "
    "size (2 × layers × KV heads × head dim × tokens × bytes, changed by KV-cache recipes) and a stated "
    "runtime overhead; your budget (or the device's memory) is checked against weights + KV cache. "
    "*Quality* comes from evidence rows copied from the papers' tables, matched on the recipe, else on "
    "the method and bit width, preferring the model's family, with a fit against model size and a "
    "range. A recipe without evidence is **unknown**: it is shown as such and ranks after every recipe "
    "whose evidence meets your limit; lossless recipes (speculative decoding) cost 0 by construction."
)
st.markdown(
    "**Hard constraints exclude, with the reason**: the serving engine cannot load the format or run "
    "the method (research code only), the device lacks the kernel or number format, calibration or "
    "training needs are not met, or the recipe writes a new checkpoint while the original must stay "
    "(load-time quantization and lossless decoding keep it). Memory and quality limits come next; then "
    "the score orders what is left."
)
recipe_cat = state.catalog()
recipe_rows = [
    {
        "recipe": r.id,
        "method": r.method,
        "configuration": r.config_text(),
        "bits (linear)": r.storage.linear,
        "format": r.format,
        "engines": ", ".join(r.engine_ids),
        "needs": ", ".join(
            x
            for x in (
                "calibration" if r.calibration else "",
                f"training: {r.training}" if r.training != "none" else "",
                ", ".join(r.requires.supports),
                f"SM >= {r.requires.min_compute_capability:g}" if r.requires.min_compute_capability else "",
            )
            if x
        ),
    }
    for r in recipe_cat.recipes.values()
]
with st.expander(f"The recipes in the knowledge base ({len(recipe_rows)})"):
    st.dataframe(pd.DataFrame(recipe_rows), hide_index=True)
st.markdown(
    "**Add a recipe**: an entry in `knowledge/data/recipes/<file>.yaml` (fields below), checked with "
    "`shrinkwise kb validate knowledge/data/recipes/<file>.yaml`; its method, format, engines and "
    "compressor must exist and fit together, and each fact names its source. **Add a row of evidence**: "
    "`knowledge/data/evidence/<source>.yaml`, one row per (recipe or method, model, setting, metric, "
    "dataset) with `recipe`, `bits`, `group_size`, `family`, `params`, the baseline and the source table. "
    "**Add a device**: an entry in `knowledge/data/devices.yaml` (architecture, compute capability, "
    "memory, supported formats and kernels, the vendor's spec page)."
)
RECIPE_MEANINGS = {
    "id": "Unique id, e.g. gptq-w4a16-g128 (evidence rows name it in their `recipe`).",
    "method": "The method it configures (a knowledge-base method id: its cell on the map).",
    "name": "Display name.",
    "summary": "One line: what it is.",
    "config": "The configuration: bits, group_size, scheme, act_order, type (GGUF), sparsity...",
    "storage": "Stored bits per weight of linear layers, embedding, lm_head and other tensors.",
    "format": "Output format (formats.yaml id); runtime-only when the engine applies it at load time.",
    "engines": "Engines that load it, each with the command that serves it and its own limits.",
    "requires": "Hardware kinds, minimum NVIDIA compute capability, required device flags.",
    "calibration": "Needs calibration text.",
    "training": "none, low (LoRA-scale) or high (pre-training or distillation scale).",
    "compressor": "Shrinkwise's bundled compressor and its exact flags (the Run-it settings), if any.",
    "sources": "Where each fact comes from: engine docs, support matrices, the papers' tables.",
}
recipe_fields = [
    {
        "recipe field": name,
        "required": f.is_required(),
        "meaning": f.description or RECIPE_MEANINGS.get(name, ""),
    }
    for name, f in Recipe.model_fields.items()
]
st.dataframe(pd.DataFrame(recipe_fields), hide_index=True, key="about_recipe_fields")

st.header("How the recommender uses them")
st.markdown(
    "The Recommend page turns your situation into *constraints* and runs a list of **rules** over every "
    "recipe. A rule either **excludes** a recipe (with the reason you read) or **raises or lowers** its "
    "score by a weight. Each rule cites the paper's claim or the source it encodes. The rules are data, "
    "read from the file below, so they can be reviewed and changed without touching code."
)
try:
    rules = state.rules()
except Exception as exc:  # the rules file belongs to the engine; say what is missing instead of failing
    st.warning(f"The rules file could not be read ({exc}).")
    rules = []
if rules:
    import re

    def _effect(r: dict) -> str:
        eff = str(r.get("effect", ""))
        if eff == "score":
            w = float(r.get("weight", 0))
            return f"score {w:+g}" + (f" × {r['scale']}" if r.get("scale") else "")
        return eff

    def _source(r: dict) -> str:
        parts = []
        if r.get("claims"):
            parts.append("paper claim " + ", ".join(str(c) for c in r["claims"]))
        for key in ("reference", "source"):
            if r.get(key):
                parts.append(str(r[key]))
        return "; ".join(parts)

    def _sentence(r: dict) -> str:
        """The rule's sentence with its placeholders shown as words ({m_name} -> the method)."""
        text = str(r.get("description") or r.get("text") or "")
        text = text.replace("{m_name}", "the method")
        return re.sub(r"\{([a-z_]+)(:[^}]*)?\}", lambda mt: f"<{mt.group(1)}>", text)

    st.caption(
        f"{len(rules)} rules, read from `engine/rules/rules.yaml`. In a condition, `c_…` are your "
        "constraints, `m_…` the method's data and `r_…` the recipe's; `<…>` in a sentence is filled in "
        "on a result."
    )
    groups = (
        ("exclude", "Exclusions: rules that rule a method out"),
        ("score", "Score adjustments: rules that raise or lower a method's score"),
        ("note", "Notes: sentences shown beside a method, no score change"),
    )
    for effect, title in groups:
        chosen = [r for r in rules if str(r.get("effect")) == effect]
        if not chosen:
            continue
        with st.expander(f"{title} ({len(chosen)})", expanded=effect == "exclude"):
            for r in chosen:
                src = _source(r)
                st.markdown(
                    f"**{r.get('id', '')}** · {_effect(r)}"
                    + (f" · :gray[{src}]" if src else "")
                    + f"  \n{_sentence(r)}  \n`{' '.join(str(r.get('condition', '')).split())}`"
                )
    others = [r for r in rules if str(r.get("effect")) not in {g[0] for g in groups}]
    for r in others:
        st.markdown(f"**{r.get('id', '')}** · {_effect(r)}  \n{_sentence(r)}")

st.header("How to add a method")
st.markdown(
    "Methods are YAML data files in `knowledge/data/methods/`, one list under the top-level key "
    "`methods:`. Add an entry, then check it with `shrinkwise kb validate knowledge/data/methods/<file>.yaml`: "
    "a mistake is reported with the file, the entry and the field. The fields:"
)


def _type_name(annotation) -> str:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is typing.Union or (origin is not None and str(origin) == "types.UnionType"):
        return " or ".join(_type_name(a) for a in args)
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return "mapping: " + ", ".join(annotation.model_fields)
        values = getattr(annotation, "values", None)
        if callable(values):
            return "one of: " + ", ".join(values())
        return annotation.__name__
    return str(annotation)


#: Plain meanings for the fields whose schema has no description of its own.
MEANINGS = {
    "id": "Unique id, lower-case words joined by '-' (used in URLs, the CLI and composes_with).",
    "name": "Display name.",
    "family": "Kind of method (the colour on the map).",
    "phase": "When it is applied: the paper's first axis.",
    "impact": "static (the model is changed for good) or dynamic (per input, weights kept).",
    "grades": "The paper's four grades (Table 1).",
    "changes": "What it touches; two methods rewriting the same thing do not stack.",
    "footprint": "Stored bits per weight, share of parameters kept, sparsity: used for memory estimates.",
    "requirements": "Calibration data, gradients, training compute.",
    "hardware": "Targets where it gives a real gain, with the kernels or engines that deliver it.",
    "formats": "Output formats and the serving engines that load them.",
    "composes_with": "Ids of methods it stacks with (pipelines).",
    "excludes": "Ids of methods it cannot be combined with.",
    "citation": "The paper: authors, title, venue, year, arXiv id or DOI, URL.",
    "in_paper": "true for the paper's eight methods only.",
    "aliases": "Other names people search for.",
}
fields = [
    {
        "field": name,
        "required": f.is_required(),
        "meaning": f.description or MEANINGS.get(name, ""),
        "type / allowed values": _type_name(f.annotation),
    }
    for name, f in Method.model_fields.items()
]
st.dataframe(
    pd.DataFrame(fields),
    hide_index=True,
    column_config={
        "meaning": st.column_config.TextColumn(width="large"),
        "type / allowed values": st.column_config.TextColumn(width="large"),
    },
)
example = state.catalog().methods.get("gptq") or next(iter(state.catalog().methods.values()), None)
if example is not None:
    with st.expander(f"A complete entry: `{example.id}`"):
        st.code(
            yaml.safe_dump(
                {"methods": [example.model_dump(mode="json", exclude_defaults=True)]},
                sort_keys=False,
                allow_unicode=True,
                width=100,
            ),
            language="yaml",
        )
