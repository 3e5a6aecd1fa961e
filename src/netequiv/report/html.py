"""A self-contained report.html: the verdict in one sentence, then the evidence.

Figures are embedded as base64 PNG data URIs and the style sheet is inline, so the file opens
offline and can be sent on its own. Every value written into the page is HTML-escaped.
"""

import base64
import html
import json

__all__ = ["render_html"]

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
h1 { font-size: 1.4rem; }
.verdict { font-size: 1.2rem; padding: 0.8rem 1rem; border-radius: 6px; }
.equivalent { background: #e4f4e4; border: 1px solid #7bb87b; }
.not-equivalent { background: #f8e4e4; border: 1px solid #c77; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
td, th { border: 1px solid #ccc; padding: 0.2rem 0.6rem; text-align: left; font-variant-numeric: tabular-nums; }
img { max-width: 100%; }
pre { background: #f4f4f4; padding: 0.6rem; overflow-x: auto; font-size: 0.8rem; }
"""


def _format(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return "n/a"
    if isinstance(value, list) and all(isinstance(item, float) for item in value):
        return ", ".join(f"{item:.6g}" for item in value)
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _table(rows, header=None):
    parts = ["<table>"]
    if header:
        parts.append("<tr>" + "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header) + "</tr>")
    for row in rows:
        parts.append("<tr>" + "".join(f"<td>{html.escape(_format(cell))}</td>" for cell in row) + "</tr>")
    parts.append("</table>")
    return "\n".join(parts)


def _image(png, alt):
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def render_html(metrics, figures):
    """Render the report page.

    Parameters
    ----------
    metrics : dict
        The content of metrics.json.
    figures : dict of str to (str, bytes)
        Figure name -> (caption, PNG bytes), in the order the page shows them.

    Returns
    -------
    str
    """
    verdict = metrics["verdict"]
    css_class = "equivalent" if verdict["equivalent"] else "not-equivalent"
    models = metrics["models"]
    held_out = metrics["held_out"]
    sections = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>netequiv compare report</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>netequiv compare</h1>",
        f'<p class="verdict {css_class}">{html.escape(verdict["sentence"])}</p>',
        "<h2>Models</h2>",
        _table(
            [[name.upper(), model["path"], model["selection"], len(model["neurons"])] for name, model in models.items()],
            header=["model", "file", "selection", "neurons"],
        ),
        "<h2>Equivalence test</h2>",
        "<p>The networks are equivalent when all three criteria pass: each statistic is at most its "
        "threshold and its p-value, against a null distribution built from the data, is at most alpha "
        f"= {html.escape(_format(verdict['alpha']))}.</p>",
        _table(
            [
                [name, "pass" if item["passed"] else "FAIL", item["statistic"], item["threshold"], item["p_value"], item["null_hypothesis"]]
                for name, item in verdict["criteria"].items()
            ],
            header=["criterion", "result", "statistic", "threshold", "p-value", "null hypothesis"],
        ),
        "<h2>Held-out correspondences</h2>",
        _table(
            [
                ["orthogonal alignment residual (relative)", metrics["alignment"]["residual_held_out"]],
                ["relative RMSE, A to B", held_out["relative_rmse_a_to_b"]],
                ["relative RMSE, B to A", held_out["relative_rmse_b_to_a"]],
            ],
            header=["quantity", "value"],
        ),
        "<p>Relative RMSE of each neuron: RMSE of the prediction divided by the neuron's standard deviation on the training inputs.</p>",
        _table(
            [[label, value] for label, value in held_out["relative_rmse_per_neuron_b"].items()],
            header=["model B neuron (predicted from A)", "relative RMSE"],
        ),
    ]
    breakdown = metrics.get("breakdown")
    if breakdown is not None:
        sections += [
            "<h2>Breakdown along the path</h2>",
            _table(
                [
                    ["points on the path", breakdown["path_length"]],
                    ["first broken point", breakdown["first_index"]],
                    ["first fold (a Jacobian loses rank)", breakdown["fold_index"]],
                    ["first round-trip failure", breakdown["round_trip_index"]],
                ],
                header=["quantity", "index (n/a: none)"],
            ),
        ]
    sections.append("<h2>Figures</h2>")
    for name, (caption, png) in figures.items():
        sections.append(f"<figure>{_image(png, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>")
    spectra = metrics["spectra"]
    sections += [
        "<h2>Diffusion maps</h2>",
        _table(
            [[name.upper(), spectra[name]["epsilon"], spectra[name]["n_neighbors"], spectra[name]["eigenvalues"]] for name in ("a", "b")],
            header=["model", "epsilon", "neighbours", "eigenvalues"],
        ),
        "<h2>Settings</h2>",
        f"<pre>{html.escape(json.dumps(metrics['settings'], indent=2))}</pre>",
        "<h2>Run time (s)</h2>",
        _table([[stage, seconds] for stage, seconds in metrics["seconds"].items()], header=["stage", "seconds"]),
        f"<p>netequiv {html.escape(metrics['netequiv_version'])}; {html.escape(metrics['machine'])}; config {html.escape(metrics['config'])}.</p>",
        "</body></html>",
    ]
    return "\n".join(sections) + "\n"
