"""Tables of clean and robust error per method (Liu Table 1; Kanai Tables 1, 3)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import plotly.graph_objects as go

from . import Figure, Group, renderer


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@renderer("table", needs={"clean_error": 1, "robust_error": 1}, text=("row",))
def render(groups: Sequence[Group]) -> list[Figure]:
    figures = []
    for g in groups:
        rows = [_text(r) for r in g.arrays["row"]]
        cells = [
            [f"{100 * c:.2f}", f"{100 * r:.2f}"]
            for c, r in zip(g.arrays["clean_error"], g.arrays["robust_error"])
        ]
        fig, ax = plt.subplots(figsize=(5.5, 0.45 * len(rows) + 0.8))
        ax.axis("off")
        table = ax.table(
            cellText=cells,
            rowLabels=rows,
            colLabels=["clean error (%)", "robust error (%)"],
            loc="center",
        )
        table.scale(1, 1.3)
        fig.tight_layout()
        web = go.Figure(
            go.Table(
                header={"values": ["", "clean error (%)", "robust error (%)"]},
                cells={"values": [rows, [c[0] for c in cells], [c[1] for c in cells]]},
            )
        )
        figures.append(Figure(f"table_{g.path.rsplit('/', 1)[-1]}", fig, web))
    return figures
