"""The hourly matching report as one self-contained HTML file (``eap-node report --out``).

Plots are drawn with Plotly; its JavaScript is inlined once, so the file opens without a
network.  Every figure is built from :meth:`MatchingReport.to_dict`, the same data
``--json`` prints.  Text from the node (account ids, zones) is HTML-escaped.
"""

from __future__ import annotations

import html
from typing import Any

from eap.node.domain.matching import MatchingReport

_CFE, _OTHER, _LOAD = "#2a9d8f", "#e9c46a", "#264653"
_MARKET, _LOCATION = "#e76f51", "#8d99ae"


def _figures(data: dict[str, Any]) -> list[tuple[str, str, Any]]:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    hours = [h["hour"] for h in data["hours"]]
    supply = go.Figure()
    supply.add_bar(
        x=hours,
        y=[h["cfe_wh"] for h in data["hours"]],
        name="claimed carbon-free",
        marker_color=_CFE,
    )
    supply.add_bar(
        x=hours,
        y=[h["claimed_wh"] - h["cfe_wh"] for h in data["hours"]],
        name="claimed, other sources",
        marker_color=_OTHER,
    )
    supply.add_scatter(
        x=hours,
        y=[h["load_wh"] for h in data["hours"]],
        name="load",
        mode="lines",
        line={"color": _LOAD, "width": 2, "shape": "hv"},
    )
    supply.update_layout(barmode="stack", yaxis_title="Wh", hovermode="x unified")

    score = make_subplots(rows=1, cols=2, subplot_titles=("by hour of day (UTC)", "by day"))
    score.add_bar(
        x=list(range(24)),
        y=data["score_by_hour_of_day"],
        name="hour of day",
        marker_color=_CFE,
        row=1,
        col=1,
    )
    days = data["days"]
    score.add_scatter(
        x=[d["day"] for d in days],
        y=[d["cfe_score"] for d in days],
        name="day",
        mode="lines+markers",
        line={"color": _LOAD},
        row=1,
        col=2,
    )
    score.update_yaxes(range=[0, 1.05], tickformat=".0%")
    score.update_layout(showlegend=False)

    emissions = go.Figure()
    emissions.add_bar(
        x=[d["day"] for d in days],
        y=[d["market_g"] / 1000 for d in days],
        name="market-based",
        marker_color=_MARKET,
    )
    emissions.add_bar(
        x=[d["day"] for d in days],
        y=[d["location_g"] / 1000 for d in days],
        name="location-based",
        marker_color=_LOCATION,
    )
    emissions.update_layout(barmode="group", yaxis_title="kg CO2e")

    flows = data["flows"]
    # Issuers on the left, the claiming node on the right (a node can be both: no loops).
    sources = sorted({f["source"] for f in flows})
    targets = sorted({f["target"] for f in flows})
    labels = [f"issued by {n}" for n in sources] + [f"claimed at {n}" for n in targets]
    sankey = go.Figure(
        go.Sankey(
            node={"label": labels, "pad": 20},
            link={
                "source": [sources.index(f["source"]) for f in flows],
                "target": [len(sources) + targets.index(f["target"]) for f in flows],
                "value": [f["wh"] for f in flows],
                "label": [f"{f['wh']:,} Wh" for f in flows],
            },
        )
    )
    return [
        ("supply", "Hourly supply against demand", supply),
        ("score", "24/7 carbon-free score", score),
        ("emissions", "Scope 2 emissions: market-based and location-based", emissions),
        ("flows", "Where the claimed records were issued (node to node, Wh)", sankey),
    ]


def render(report: MatchingReport) -> str:
    """The report as one HTML document (about 4.5 MB: Plotly's JavaScript is inlined)."""
    from plotly.offline import get_plotlyjs

    data = report.to_dict()
    s = data["summary"]
    esc = html.escape
    sections = []
    for key, title, fig in _figures(data):
        fig.update_layout(
            margin={"l": 50, "r": 20, "t": 40, "b": 40}, height=380, template="plotly_white"
        )
        body = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"plot-{key}")
        sections.append(f"<section><h2>{esc(title)}</h2>{body}</section>")
    rows = [
        ("Consumer", data["subject"]),
        ("Node", data["node_id"]),
        ("Zone", data["zone"]),
        ("Period (UTC)", f"{data['start']} to {data['end']}"),
        ("Load from", "consumption file" if data["load_basis"] == "file" else "the claims"),
        ("Load", f"{s['load_wh']:,} Wh"),
        ("Claimed", f"{s['claimed_wh']:,} Wh"),
        ("24/7 carbon-free score", f"{s['cfe_score']:.1%}"),
        ("Market-based emissions", f"{s['market_based_g'] / 1000:,.2f} kg CO2e"),
        ("Location-based emissions", f"{s['location_based_g'] / 1000:,.2f} kg CO2e"),
    ]
    table = "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in rows)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Hourly matching: {esc(data["subject"])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; }} th {{ text-align: left; padding-right: 2rem; }}
td, th {{ padding: .2rem .4rem; border-bottom: 1px solid #ddd; }}
section {{ margin-top: 2rem; }} .note {{ color: #555; font-size: .9rem; }}
</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
<h1>Hourly matching and Scope 2 emissions</h1>
<table id="summary">{table}</table>
<p class="note">Score: share of each hour's load covered by carbon-free claims generated in
that hour ({esc(", ".join(data["carbon_free_sources"]))}). Market-based: claimed records at
their own intensity, the rest at the residual mix of the zone's unclaimed records of the hour.
Location-based: the zone's average intensity of all issued records of the hour.</p>
{"".join(sections)}
</body></html>
"""
