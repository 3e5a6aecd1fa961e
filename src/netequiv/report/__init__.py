"""Figures and the self-contained HTML report of ``netequiv compare``."""

from pathlib import Path

from .figures import breakdown_figure, embeddings_figure, held_out_figure, png_bytes, spectra_figure
from .html import render_html

__all__ = ["render_html", "write_report"]


def write_report(out, metrics, transformation, observed_a, observed_b, prepared, evaluation):
    """Write the PNG figures to ``out/figures/`` and ``out/report.html`` with the same images embedded.

    Returns
    -------
    path : Path
        The report file.
    """
    out = Path(out)
    figures = {
        "spectra": ("Diffusion-map spectra of both networks; matching spectra indicate isometric input manifolds.",
                    spectra_figure(metrics["spectra"])),
        "embeddings": ("Held-out embedding coordinates of model B against model A, before and after the orthogonal alignment; points on the diagonal agree.",
                       embeddings_figure(evaluation.phi_test, evaluation.psi_test, transformation.orthogonal_map_)),
        "held_out": ("Model B's held-out activations predicted from model A's against the true ones.",
                     held_out_figure(evaluation.predicted_b, observed_b.Y_test, prepared.labels_b)),
    }
    if evaluation.breakdown is not None:
        scan = evaluation.breakdown
        figures["breakdown"] = ("Breakdown score along the path given in [inputs] breakdown_path; the transformation is invalid where the score exceeds 1.",
                                breakdown_figure(scan.scores, 1.0, scan.first_index))

    # The names are those of netequiv.compare.pipeline.FIGURE_NAMES, which --force replaces.
    folder = out / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    rendered = {}
    for name, (caption, figure) in figures.items():
        png = png_bytes(figure)
        (folder / f"{name}.png").write_bytes(png)
        rendered[name] = (caption, png)
    path = out / "report.html"
    path.write_text(render_html(metrics, rendered), encoding="utf-8")
    return path
