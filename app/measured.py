""" "Measured on your model": what a sweep measured, shown on the Recommend page beside the prediction.

The recommender predicts from papers and from runs on other models; once a sweep (:mod:`jobs.sweeps`)
has run a recipe on the model the recommendation is for, the page shows that measurement on the
recipe's card, labelled "measured on your model", with a link to the sweep. Only the viewer's own
sweeps count (every sweep for an admin), as for every other run's figures (issue 15).
"""

from __future__ import annotations

import logging
from typing import Any

import streamlit as st

from app import state

log = logging.getLogger(__name__)


def add_measured_on_model(doc: dict[str, Any], constraints: Any) -> dict[str, Any]:
    """Add ``measured`` to the recommendation document's recipes swept on ``constraints.model``.

    A database that cannot be read leaves the recommendation as it is (the page must still open).
    """
    model = getattr(constraints, "model", None)
    if not model:
        return doc
    try:
        from app import auth
        from jobs import sweeps

        measured = sweeps.measured_on_model(model, owner=auth.viewer().owner_filter)
    except Exception:
        log.exception("cannot read the sweeps measured on %s", model)
        return doc
    from jobs.sweeps import annotate_recommendation

    doc["measured_on_model"] = measured  # every swept recipe, ranked or not (summary below)
    return annotate_recommendation(doc, measured)


def summary(doc: dict[str, Any], recipe_name: Any) -> None:
    """One block listing every recipe measured on this model, with its rank here (or why it is not
    ranked) and its predicted drop beside the measured one: a swept recipe may be excluded here or rank
    below the cards, and its measurement must still be seen."""
    measured = doc.get("measured_on_model") or {}
    if not measured:
        return
    ranked = {r["id"]: (i, r) for i, r in enumerate(doc.get("ranked") or [], 1)}
    excluded = {e["id"] for e in doc.get("excluded") or []}
    lines = []
    for rid, m in sorted(measured.items(), key=lambda kv: ranked.get(kv[0], (10**6, None))[0]):
        where = (
            f"rank {ranked[rid][0]}"
            if rid in ranked
            else "excluded here"
            if rid in excluded
            else "not ranked"
        )
        pred = ""
        if rid in ranked:
            drop = (ranked[rid][1].get("estimate") or {}).get("quality_drop_pct")
            pred = f", predicted ~{drop:+.1f}%" if drop is not None else ", predicted: unknown"
        lines.append(
            f"- **{recipe_name(rid)}** ({where}): measured **{m['quality_drop_pct']:+.2f}%**{pred}"
            + (f", {m['size_bytes'] / 1e6:.1f} MB" if m.get("size_bytes") else "")
        )
    with st.container(border=True):
        st.markdown(":green-badge[measured on your model] " + f"{len(lines)} recipe(s) swept on this model:")
        st.markdown("\n".join(lines))
        sweep = next((m.get("sweep") for m in measured.values() if m.get("sweep")), None)
        if sweep:
            st.page_link(
                state.PAGE_SWEEP,
                label="Open the latest sweep on this model",
                icon=":material/stacked_line_chart:",
                query_params={"sweep": sweep},
            )


def measured_line(measured: dict[str, Any] | None) -> None:
    """The card's "measured on your model" line (nothing when the recipe was not swept on this model)."""
    if not measured:
        return
    parts = [
        f"quality drop **{measured['quality_drop_pct']:+.2f}%** (perplexity "
        f"{measured['perplexity_before']:.3f} → {measured['perplexity_after']:.3f})"
    ]
    if measured.get("size_bytes"):
        parts.append(f"{measured['size_bytes'] / 1e6:.1f} MB on disk")
    if measured.get("bits_per_weight"):
        parts.append(f"{measured['bits_per_weight']:.2f} bits per weight")
    if measured.get("decode_tokens_per_s"):
        parts.append(f"decode {measured['decode_tokens_per_s']:.1f} tokens/s here")
    st.markdown(":green-badge[measured on your model] " + ", ".join(parts))
    if measured.get("sweep"):
        st.page_link(
            state.PAGE_SWEEP,
            label="Open the sweep that measured it",
            icon=":material/stacked_line_chart:",
            query_params={"sweep": measured["sweep"]},
        )
