"""The rotating-horse experiment: renderer, sequence-window metric on codes, autoencoder, pipeline."""

import json

import numpy as np
import pytest

from netequiv.experiments._render import Camera, Mesh, _rasterise, load_horse, load_obj, render, render_turn
from netequiv.local_metric import metric_from_sequence

SIZE = 64


@pytest.fixture(scope="module")
def horse():
    return load_horse()


def _mask(image):
    return image > 0


def _centroid(mask):
    rows, columns = np.nonzero(mask)
    return columns.mean(), rows.mean()


# ----------------------------------------------------------------------------- mesh and renderer


def test_horse_mesh_shipped(horse):
    assert horse.vertices.shape == (1013, 3)
    assert horse.faces.shape == (1682, 3)
    assert np.linalg.norm(horse.vertices, axis=1).max() == pytest.approx(1.0, abs=1e-6)


def test_load_obj_fans_and_negative_indices(tmp_path):
    path = tmp_path / "quad.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nf 1/1/1 2/2/2 3/3/3 4/4/4\nf -4 -3 -2\n")
    mesh = load_obj(path)
    np.testing.assert_array_equal(mesh.faces, [[0, 1, 2], [0, 2, 3], [0, 1, 2]])


def test_load_obj_rejects_bad_files(tmp_path):
    empty = tmp_path / "empty.obj"
    empty.write_text("v 0 0 0\n")
    with pytest.raises(ValueError, match="contains no faces"):
        load_obj(empty)
    broken = tmp_path / "broken.obj"
    broken.write_text("v 0 0 0\nv 1 0 0\nf 1 2 3\n")
    with pytest.raises(ValueError, match="outside 1..2"):
        load_obj(broken)


def test_square_projects_to_expected_area():
    # A unit square in the xz plane faces the default camera (on the -y axis, distance 4).
    square = Mesh(
        np.array([[-0.5, 0, -0.5], [0.5, 0, -0.5], [0.5, 0, 0.5], [-0.5, 0, 0.5]]), np.array([[0, 1, 2], [0, 2, 3]])
    )
    camera = Camera(elevation=0.0)
    image = render(square, camera, size=SIZE, supersample=1)
    focal = 0.5 * SIZE / np.tan(np.radians(camera.field_of_view) / 2)
    side = focal * 1.0 / camera.distance
    assert _mask(image).sum() == pytest.approx(side**2, rel=0.03)
    column, row = _centroid(_mask(image))
    assert column == pytest.approx(SIZE / 2 - 0.5, abs=0.5)
    assert row == pytest.approx(SIZE / 2 - 0.5, abs=0.5)


def test_rasterise_keeps_nearest_surface():
    big = np.array([[2.0, 2.0], [30.0, 2.0], [2.0, 30.0]])
    for near_first in (True, False):
        points = np.stack([big, big])
        depths = np.array([[2.0] * 3, [3.0] * 3])
        shades = np.array([0.3, 0.8])
        if not near_first:
            points, depths, shades = points[::-1], depths[::-1], shades[::-1]
        image = _rasterise(points, depths, shades, 32)
        assert image[5, 5] == 0.3
        assert image[31, 31] == 0.0


def test_render_deterministic_in_unit_range(horse):
    first = render(horse, Camera(25.0), 0.7, size=SIZE)
    second = render(horse, Camera(25.0), 0.7, size=SIZE)
    np.testing.assert_array_equal(first, second)
    assert first.min() >= 0.0
    assert first.max() <= 1.0
    # Black background all around, the horse in the middle.
    assert np.all(first[0] == 0)
    assert np.all(first[-1] == 0)
    assert np.all(first[:, 0] == 0)
    assert np.all(first[:, -1] == 0)
    assert first[SIZE // 2 - 8 : SIZE // 2 + 8, SIZE // 2 - 8 : SIZE // 2 + 8].max() > 0.2


def test_side_view_larger_than_front_view(horse):
    camera = Camera(elevation=0.0)
    side = _mask(render(horse, camera, 0.0, size=SIZE)).sum()
    front = _mask(render(horse, camera, np.pi / 2, size=SIZE)).sum()
    assert side > 1.5 * front


def test_half_turn_mirrors_silhouette(horse):
    # Turning by pi about the vertical axis mirrors the side view left to right; perspective
    # makes the match approximate.
    camera = Camera(elevation=0.0)
    mask_0 = _mask(render(horse, camera, 0.0, size=SIZE))
    mask_pi = _mask(render(horse, camera, np.pi, size=SIZE))
    mirrored = mask_0[:, ::-1]
    assert np.sum(mirrored & mask_pi) / np.sum(mirrored | mask_pi) > 0.85
    assert mask_pi.sum() == pytest.approx(mask_0.sum(), rel=0.05)
    column_0, row_0 = _centroid(mask_0)
    column_pi, row_pi = _centroid(mask_pi)
    centre = SIZE / 2 - 0.5
    assert abs(column_0 - centre) > 1.0  # the head makes the side view lopsided
    assert column_pi - centre == pytest.approx(-(column_0 - centre), abs=0.5)
    assert row_pi == pytest.approx(row_0, abs=0.5)


def test_turning_object_equals_turning_camera(horse):
    # Silhouettes only: the light is fixed in the world, so shading differs.
    turned = _mask(render(horse, Camera(20.0, azimuth=-90.0), -0.4, size=SIZE))
    moved = _mask(render(horse, Camera(20.0, azimuth=-90.0 + np.degrees(0.4)), 0.0, size=SIZE))
    assert np.mean(turned != moved) < 0.002


def test_silhouette_changes_smoothly(horse):
    camera = Camera(elevation=25.0)
    frames = render_turn(horse, camera, 360, size=32)
    areas = _mask(frames).reshape(360, -1).sum(axis=1)
    steps = np.abs(np.diff(np.r_[areas, areas[0]])) / areas
    assert steps.max() < 0.08
    # Full period: the area passes through two maxima (side views) and two minima (front, back).
    assert areas.max() > 1.5 * areas.min()


def test_cameras_differ(horse):
    above = render(horse, Camera(25.0), 0.3, size=SIZE)
    below = render(horse, Camera(-15.0), 0.3, size=SIZE)
    assert np.mean(np.abs(above - below)) > 0.02
    assert np.mean(_mask(above) != _mask(below)) > 0.02


def test_render_turn_cache(horse, tmp_path):
    frames = render_turn(horse, Camera(25.0), 12, size=16, cache_dir=tmp_path)
    assert frames.shape == (12, 16, 16)
    assert frames.dtype == np.float32
    assert len(list(tmp_path.glob("frames_*.npy"))) == 1
    np.testing.assert_array_equal(render_turn(horse, Camera(25.0), 12, size=16, cache_dir=tmp_path), frames)
    render_turn(horse, Camera(-15.0), 12, size=16, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("frames_*.npy"))) == 2


def test_render_rejects_camera_too_close(horse):
    with pytest.raises(ValueError, match="behind the camera"):
        render(horse, Camera(0.0, distance=0.1))


# ------------------------------------------------------------------ sequence-window metric on codes


def _codes(angles, weights):
    """Smooth 6-D codes of an angle: a fixed random network with one tanh layer."""
    features = np.stack([np.cos(angles), np.sin(angles), np.cos(2 * angles), np.sin(2 * angles)], axis=1)
    return np.tanh(features @ weights[0]) @ weights[1]


def _step_lengths(Y, window, rank):
    metric = metric_from_sequence(Y, window, rank=rank)
    steps = np.diff(Y, axis=0)
    return np.sqrt(np.einsum("ni,nij,nj->n", steps, metric[:-1], steps))


@pytest.fixture(scope="module")
def two_code_maps():
    """Two different 6-D code maps of the same 1,080 angles over 0.6 of a turn."""
    rng = np.random.default_rng(0)
    angles = np.linspace(0.0, 1.2 * np.pi, 1080)
    return [_codes(angles, (rng.normal(size=(4, 8)), rng.normal(size=(8, 6)))) for _ in range(2)]


def test_window_metric_rank_one_isometric(two_code_maps):
    # Truncated to rank 1, a step's Mahalanobis length is its angle step over the window's
    # spread of angles, whatever the code map; Euclidean lengths differ between the maps.
    interior = slice(60, -60)
    lengths = [_step_lengths(Y, 61, rank=1)[interior] for Y in two_code_maps]
    euclidean = [np.linalg.norm(np.diff(Y, axis=0), axis=1)[interior] for Y in two_code_maps]
    ratio = lengths[0] / lengths[1]
    euclidean_ratio = euclidean[0] / euclidean[1]
    assert np.abs(ratio - 1).max() < 0.15
    assert euclidean_ratio.max() / euclidean_ratio.min() > 2.0
    window_spread = np.sqrt((61**2 - 1) / 12)  # standard deviation of 61 consecutive frame indices
    assert np.median(lengths[0]) == pytest.approx(1 / window_spread, rel=0.05)


def test_window_metric_estimated_rank_agrees(two_code_maps):
    # The estimated rank, which the horse experiment uses, keeps most of that agreement.
    interior = slice(60, -60)
    ratio = _step_lengths(two_code_maps[0], 61, None)[interior] / _step_lengths(two_code_maps[1], 61, None)[interior]
    assert np.median(ratio) == pytest.approx(1.0, abs=0.05)
    assert np.mean(np.abs(ratio - 1) < 0.15) > 0.9


# ------------------------------------------------------------------------------ autoencoder


def test_autoencoder_shapes_and_range():
    torch = pytest.importorskip("torch")
    from netequiv.experiments._autoencoder import build_autoencoder, decode, encode

    model = build_autoencoder(32, 6)
    images = np.random.default_rng(0).uniform(size=(5, 32, 32))
    codes = encode(model, images)
    assert codes.shape == (5, 6)
    decoded = decode(model, codes)
    assert decoded.shape == (5, 32, 32)
    assert decoded.min() >= 0.0
    assert decoded.max() <= 1.0
    with torch.no_grad():
        direct = model(torch.as_tensor(images, dtype=torch.float32)[:, None])[:, 0].numpy()
    np.testing.assert_allclose(decoded, direct, atol=1e-6)
    convolutions = [module for module in model.encoder if isinstance(module, torch.nn.Conv2d)]
    assert [module.kernel_size[0] for module in convolutions] == [9, 7, 5, 3]
    assert [module.out_channels for module in convolutions] == [8, 32, 64, 16]


def test_autoencoder_rejects_bad_size():
    pytest.importorskip("torch")
    from netequiv.experiments._autoencoder import build_autoencoder

    with pytest.raises(ValueError, match="divisible by 16"):
        build_autoencoder(40)


def test_noise_is_nonnegative_and_clipped():
    torch = pytest.importorskip("torch")
    from netequiv.experiments._autoencoder import add_noise

    images = torch.full((200, 1, 8, 8), 0.5)
    noisy = add_noise(images, 0.1, torch.Generator().manual_seed(0))
    assert torch.all(noisy >= images)
    assert noisy.max() <= 1.0
    # E|z| for z ~ N(0, 0.1) is sqrt(0.2 / pi) = 0.252; clipping at 1 lowers it a little.
    assert float((noisy - images).mean()) == pytest.approx(0.24, abs=0.02)


def test_dead_initialisation_detected():
    torch = pytest.importorskip("torch")
    from netequiv.experiments._autoencoder import build_autoencoder, is_dead

    model = build_autoencoder(16, 6)
    images = torch.rand(8, 1, 16, 16)
    assert not is_dead(model, images)
    # Switch off every unit of the decoder's first ReLU layer.
    with torch.no_grad():
        model.decoder[0].weight.zero_()
        model.decoder[0].bias.fill_(-1.0)
    assert is_dead(model, images)


def test_plateau_restarts_training(monkeypatch):
    torch = pytest.importorskip("torch")
    from netequiv.experiments import _autoencoder

    # A plateau limit of 0 can never be met, so every start but the last stops half way.
    monkeypatch.setattr(_autoencoder, "PLATEAU_FRACTION", 0.0)
    monkeypatch.setattr(_autoencoder, "MAX_RESTARTS", 1)
    images = np.random.default_rng(0).uniform(size=(12, 16, 16))
    model, history = _autoencoder.train_autoencoder(
        _autoencoder.build_autoencoder(16, 6), images[:8], images[8:], epochs=4, batch_size=4, progress=False
    )
    assert history["restarts"] == 1
    assert len(history["loss"]) == 4
    assert history["mean_image_loss"] > 0
    assert not model.training


# --------------------------------------------------------------------------------- pipeline


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    from netequiv.experiments import run_experiment

    out = tmp_path_factory.mktemp("horse")
    return out, run_experiment("horse", out, preset="quick", seed=0, progress=False)


def test_quick_pipeline_checks(quick):
    out, metrics = quick
    for check, met in metrics["checks"].items():
        assert met, check
    assert metrics["cross_to_reconstruction_ratio"]["bce"] <= 1.5
    assert metrics["cross_to_reconstruction_ratio"]["mae"] <= 1.5
    assert min(metrics["spearman_first_coordinate_vs_angle"]) > 0.99
    assert max(metrics["reconstruction_to_mean_image_mae_ratio"]) < 0.7


def test_quick_pipeline_fails_outside_range(quick):
    _, metrics = quick
    end = metrics["training_range_degrees"][1]
    after = metrics["failure_onset_degrees"]["after_range_end"]
    before = metrics["failure_onset_degrees"]["before_range_start"]
    assert after is not None and end <= after < 300
    assert before is None or before > end
    # Failing frames concentrate outside the training range.
    assert metrics["failing_fraction"]["outside_range"] > 0.3
    assert metrics["failing_fraction"]["training_range"] < 0.5 * metrics["failing_fraction"]["outside_range"]
    assert metrics["errors"]["cross_mae"]["outside_range"] > metrics["errors"]["cross_mae"]["training_range"]


def test_quick_pipeline_outputs(quick):
    out, _ = quick
    for name in ("samples", "embeddings", "cross_decoding", "cross_decoding_error", "training_loss"):
        assert (out / f"{name}.png").stat().st_size > 1000, name
    assert json.loads((out / "metrics.json").read_text())["experiment"] == "horse"
    assert (out / "summary.txt").exists()
    assert (out / "network_1.pt").exists()
    assert (out / "network_2.pt").exists()
    assert (out / "codes.npz").exists()
    assert len(list((out / "renders").glob("frames_*.npy"))) == 2


@pytest.mark.paper
def test_paper_preset(tmp_path):
    from netequiv.experiments import run_experiment

    metrics = run_experiment("horse", tmp_path, preset="paper", seed=0, progress=False)
    for check, met in metrics["checks"].items():
        assert met, check
