"""Where a method sits on the paper's central trade-off: predictability vs adaptivity (claims 3 and 4).

The paper gives two qualitative statements that fix the geometry:

* claim 1/2: static methods give a predictable reduction; dynamic ones adapt to the input;
* claim 3: the closer the phase is to inference, the higher the adaptivity and the lower the
  predictability of the gain.

So a method's adaptivity is a weighted mix of its phase position (0 at pre-training, 1 at inference,
in ``knowledge.schema.PHASE_ORDER``) and its impact (0 static, 1 dynamic); predictability is the
complement. The weights are equal because the paper ranks neither axis above the other. Rules read
``m_predictability``/``m_adaptivity`` from here, and the app's trade-off chart plots the same numbers,
so the chart and the ranking cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from knowledge.schema import PHASE_ORDER, Impact, Method, Phase

#: Share of adaptivity that comes from the phase position; the rest comes from the impact.
PHASE_WEIGHT = 0.5
IMPACT_WEIGHT = 1.0 - PHASE_WEIGHT


def phase_index(phase: Phase | str) -> int:
    """0 for pre-training .. 3 for inference (lifecycle order)."""
    return PHASE_ORDER.index(Phase(phase))


def phase_position(phase: Phase | str) -> float:
    """Phase index scaled to 0..1: how close to inference the method acts."""
    return phase_index(phase) / (len(PHASE_ORDER) - 1)


@dataclass(frozen=True)
class Position:
    """A method's place on the trade-off; ``predictability + adaptivity == 1``."""

    phase_position: float
    adaptivity: float
    predictability: float

    def to_dict(self) -> dict[str, float]:
        return {
            "phase_position": round(self.phase_position, 4),
            "adaptivity": round(self.adaptivity, 4),
            "predictability": round(self.predictability, 4),
        }


def position_of(phase: Phase | str, impact: Impact | str) -> Position:
    pos = phase_position(phase)
    adaptivity = PHASE_WEIGHT * pos + IMPACT_WEIGHT * (1.0 if Impact(impact) is Impact.DYNAMIC else 0.0)
    return Position(phase_position=pos, adaptivity=adaptivity, predictability=1.0 - adaptivity)


def position(method: Method) -> Position:
    """The trade-off position of one method (depends only on its phase and impact)."""
    return position_of(method.phase, method.impact)


def positions(methods: Mapping[str, Method] | Iterable[Method]) -> dict[str, Position]:
    """Positions of many methods, keyed by id (for the app's trade-off chart)."""
    items = methods.values() if isinstance(methods, Mapping) else methods
    return {m.id: position(m) for m in items}
