"""Method page: everything the knowledge base holds about one method, with its evidence and sources."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import auth, state, ui
from app.figures.phase_map import run_id_of

cat = state.catalog()
ids = sorted(cat.methods, key=lambda i: cat.methods[i].name.lower())

wanted = st.query_params.get("id") or st.session_state.get(state.METHOD_ID)
if wanted not in cat.methods:
    if wanted:
        st.warning(f"No method with id {wanted!r} in the knowledge base; pick one below.")
    wanted = None

chosen = st.selectbox(
    "Method",
    ids,
    index=ids.index(wanted) if wanted else None,
    key=f"method_pick_{wanted}",
    format_func=state.method_name,
    placeholder="choose a method…",
    help="Every method of the knowledge base; the URL keeps the one shown (?id=…).",
)
if chosen is None:
    st.title("Method")
    st.info("Pick a method above, or open one from the Map, the Catalogue or a recommendation.")
    st.stop()
if chosen != st.query_params.get("id"):
    st.query_params["id"] = chosen
st.session_state[state.METHOD_ID] = chosen
m = cat.methods[chosen]

st.title(m.name)
ui.badges(m)
st.markdown(f"*{m.summary}*")

g = m.grades
c = st.columns(4)
c[0].metric(
    "Size reduction",
    str(g.size_reduction),
    help="How much smaller the deployed model gets (the paper's grade)",
)
c[1].metric("Quality drop", str(g.quality_drop), help="Loss of perplexity/accuracy (the paper's grade)")
c[2].metric(
    "Hardware dependence", str(g.hardware_dependence), help="Does the gain need specific kernels or hardware?"
)
c[3].metric(
    "Backward compatibility",
    str(g.backward_compatibility),
    help="Does the original model stay usable as it was? Static methods: none (keep a second copy)",
)

left, right = st.columns([3, 2], gap="large")
with left:
    st.subheader("How it works")
    st.markdown(m.mechanism)
    st.subheader("Trade-off")
    st.markdown(m.tradeoff)
with right:
    st.subheader("What it needs")
    r = m.requirements
    hours = (
        f" (~{r.gpu_hours_per_billion:g} GPU-hours per billion parameters)" if r.gpu_hours_per_billion else ""
    )
    st.markdown(
        f"- calibration data: **{'yes' if r.calibration_data else 'no'}**\n"
        f"- gradients (backward passes): **{'yes' if r.gradients else 'no'}**\n"
        f"- training compute: **{r.training_compute}**{hours}\n"
        + ("- only when the model is trained from scratch\n" if r.retraining_from_scratch else "")
        + f"- changes: {', '.join(str(x) for x in m.changes)}"
        + (f"\n- bit-widths: {', '.join(f'{b:g}' for b in m.bits)}" if m.bits else "")
    )
    fp = m.footprint
    facts = []
    if fp.bits_per_weight < 16:
        facts.append(f"{fp.bits_per_weight:g} stored bits per weight (scales included)")
    if fp.param_fraction < 1:
        facts.append(f"{fp.param_fraction:.0%} of the parameters kept")
    if fp.sparsity:
        facts.append(
            f"{fp.sparsity:.0%} zeros" + (" stored compressed" if fp.sparsity_stored else " (stored dense)")
        )
    if fp.compute_fraction:
        facts.append(f"~{fp.compute_fraction:.0%} of the compute per token")
    if facts:
        st.markdown("**Footprint:** " + "; ".join(facts))

    st.subheader("Hardware and formats")
    st.markdown(
        "**Real gain on:**\n"
        + "\n".join(f"- {h.target}" + (f": {', '.join(h.kernels)}" if h.kernels else "") for h in m.hardware)
    )
    if m.formats:
        st.markdown(
            "**Output formats** (and the engines that load them):\n"
            + "\n".join(
                f"- `{f.format}`" + (f": {', '.join(str(e) for e in f.engines)}" if f.engines else "")
                for f in m.formats
            )
        )


def _change(e) -> str:
    """The relative change against the row's baseline, as the tables show it ("+18.7%"), or ""."""
    change = e.relative_change
    return f"{change:+.1%}" if change is not None else ""


def _figure(e) -> dict:
    """The columns both evidence tables share: what was measured, against what."""
    return {
        "model": e.model,
        "setting": e.setting,
        "metric": str(e.metric),
        "dataset": e.dataset or "",
        "value": e.value,
        "baseline": e.baseline,
        "change": _change(e),
        "baseline is": e.baseline_label or "",
    }


st.subheader("From the papers")
papers = cat.evidence_for(m.id, measured=False)
if papers:
    st.caption("Figures reported by the cited sources, each with its baseline and where it comes from.")
    st.dataframe(
        pd.DataFrame(
            [
                {
                    **_figure(e),
                    "source": f"{e.source.paper}, {e.source.locator}",
                    "kind": str(e.source.tag),
                    "link": e.source.url,
                }
                for e in papers
            ]
        ),
        hide_index=True,
        column_config={"link": st.column_config.LinkColumn(display_text="open")},
    )
else:
    st.caption("No figures from the papers recorded yet for this method.")


def _my_runs(run_ids: set[int]) -> dict[int, str]:
    """Of these runs, those the viewer may open: run id -> the public id its link carries."""
    if not run_ids:
        return {}
    try:
        from jobs import ui as jobs_ui

        backend, viewer = jobs_ui.backend(), auth.viewer()
        out = {}
        for rid in run_ids:
            try:
                info = backend.status(rid)
            except KeyError:
                continue
            if viewer.can_see(info.owner):
                out[rid] = jobs_ui.link_id(info)
        return out
    except Exception:  # no database: the figures still show, without links
        return {}


st.subheader("Measured here")
measured_all = cat.evidence_for(m.id, measured=True)
# Runs are private to their owner (admins see all): figures of other users' runs are not shown here.
mine = _my_runs({rid for e in measured_all if (rid := run_id_of(e)) is not None})
measured = [e for e in measured_all if (rid := run_id_of(e)) is None or rid in mine]
if measured:
    models = sorted({e.model for e in measured})
    st.caption(
        f"Figures Shrinkwise measured itself, on {', '.join(models)}: the same model before and after "
        "compression, on this machine. Set them next to the papers' figures above, which were "
        "measured on other (usually larger) models."
    )
    st.dataframe(
        pd.DataFrame(
            [
                {
                    **_figure(e),
                    "run": f"#{rid}" if (rid := run_id_of(e)) is not None and rid in mine else "",
                    "where": e.source.locator,
                    "note": e.note or "",
                }
                for e in measured
            ]
        ),
        hide_index=True,
    )
    for rid in sorted(mine, reverse=True)[:5]:  # the newest runs; the History page lists them all
        try:
            st.page_link(
                "views/run_result.py",
                label=f"Open the result of run #{rid}",
                icon=":material/analytics:",
                query_params={"run": mine[rid]},
            )
        except Exception:
            break
else:
    how = (
        f"the Compress page, or `shrinkwise compress demo --method {m.compressor} --out out/`"
        if m.compressor
        else "the Compress page or `shrinkwise compress` with a method that has a compressor"
    )
    st.caption(
        f"Nothing measured here yet for this method. Run it on a model with {how}: its before/after "
        "figures then appear in this section and on the map."
    )

st.subheader("Composes with")
st.caption(
    "Methods it can be stacked with across the lifecycle, and methods it cannot be combined with. "
    "Pick one to open its page."
)
for label, others, key in (
    ("Stacks well with", m.composes_with, "method_composes"),
    ("Conflicts with", m.excludes, "method_excludes"),
):
    known = [o for o in others if o in cat.methods]
    if known:
        picked = st.pills(label, known, format_func=state.method_name, key=f"{key}_{m.id}")
        if picked:
            state.open_method(picked)
if not m.composes_with and not m.excludes:
    st.caption("No composition recorded.")

st.subheader("Recipes")
recipes = cat.recipes_of(m.id)
if recipes:
    st.caption(
        "The configurations of this method the recommender ranks: each with its stored bits, format and "
        "the engines that serve it (knowledge/data/recipes)."
    )
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "recipe": r.id,
                    "configuration": r.config_text(),
                    "bits (linear)": r.storage.linear,
                    "format": r.format,
                    "engines": ", ".join(r.engine_ids),
                    "bundled": "yes" if r.compressor else "",
                }
                for r in recipes
            ]
        ),
        hide_index=True,
        key="method_recipes",
    )
else:
    st.caption("No recipe data yet: the recommender ranks this method with its default configuration.")

st.subheader("Citation")
cit = m.citation
ident = f" arXiv:{cit.arxiv}." if cit.arxiv else (f" doi:{cit.doi}." if cit.doi else "")
venue = cit.venue if str(cit.year) in cit.venue else f"{cit.venue}, {cit.year}"
st.markdown(f"{cit.authors}. *{cit.title}*. {venue}.{ident} [{cit.url}]({cit.url})")

st.subheader("Run it")
if m.compressor:
    st.markdown(
        f"Shrinkwise bundles a compressor for this method (`{m.compressor}`). "
        "Run it on the demo model from a terminal:"
    )
    st.code(f"shrinkwise compress demo --method {m.compressor} --out out/", language="bash")
    # The Compress page opens with this compressor chosen and the run filed under this method: a
    # compressor may run several methods (dynamic int8 runs cpu-inference and dynamic-int8), and its
    # id is not a method id (magnitude runs magnitude-pruning), so the link names both.
    try:
        st.page_link(
            state.PAGE_COMPRESS,
            label=f"Or compress a model with {m.name} in the browser",
            icon=":material/play_circle:",
            query_params={"method": m.id, "compressor": m.compressor},
        )
    except Exception:
        pass
else:
    st.caption("No bundled compressor implements this method yet.")
