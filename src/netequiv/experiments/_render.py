"""Grayscale images of a triangle mesh: OBJ loading, a perspective camera and a numpy z-buffer.

The rasteriser is vectorised over triangles and pixels and needs no system libraries. Each
triangle is flat shaded with a diffuse (Lambert) term and an ambient term; the background is 0.
Conventions:

- World coordinates have z up. The object turns about the z axis by ``angle`` (radians,
  counter-clockwise seen from above), so frame k of a turn of n frames shows ``2 pi k / n``.
- A pixel's value is sampled at its centre; ``supersample=s`` renders at ``s`` times the size and
  averages s x s blocks, which anti-aliases the silhouette.
- Renders are deterministic: the same mesh, camera, size and angles give the same bytes.
"""

import hashlib
import logging
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np

logger = logging.getLogger("netequiv.experiments")

# Bumped whenever a change to this module changes the pixels, so that stale caches are not reused.
RENDERER_VERSION = 1


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh: vertex positions (V, 3) and zero-based vertex indices of each triangle (F, 3)."""

    vertices: np.ndarray
    faces: np.ndarray

    def checksum(self):
        """Return a hex digest of the vertex and face arrays, for cache keys."""
        digest = hashlib.sha256(np.ascontiguousarray(self.vertices, dtype=np.float64).tobytes())
        digest.update(np.ascontiguousarray(self.faces, dtype=np.int64).tobytes())
        return digest.hexdigest()


def load_obj(path):
    """Read the vertices and triangles of a Wavefront OBJ file.

    Only ``v`` and ``f`` records are read; texture and normal indices (``f 1/2/3``) are ignored,
    and polygons with more than three vertices are split into a triangle fan.

    Parameters
    ----------
    path : path-like

    Returns
    -------
    mesh : Mesh

    Raises
    ------
    ValueError
        When the file has no triangles or a face refers to a vertex that does not exist.
    """
    vertices, faces = [], []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            fields = line.split()
            if not fields:
                continue
            if fields[0] == "v":
                vertices.append([float(value) for value in fields[1:4]])
            elif fields[0] == "f":
                polygon = [int(field.split("/")[0]) for field in fields[1:]]
                faces.extend([polygon[0], polygon[k], polygon[k + 1]] for k in range(1, len(polygon) - 1))
    vertices = np.asarray(vertices, dtype=float).reshape(-1, 3)
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(faces) == 0:
        raise ValueError(f"{path} contains no faces; expected a triangle mesh in Wavefront OBJ format.")
    # OBJ indices are one-based; negative indices count back from the last vertex read.
    faces = np.where(faces > 0, faces - 1, faces + len(vertices))
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise ValueError(
            f"{path} has faces that refer to vertex indices outside 1..{len(vertices)}; the file is corrupt."
        )
    return Mesh(vertices, faces)


def load_horse():
    """Load the horse mesh shipped with netequiv (1,013 vertices, 1,682 triangles, CC-BY-SA-3.0).

    The mesh is centred at the origin, scaled into the unit ball, with z up; ``data/horse/NOTICE.md``
    in the package gives its source and licence.
    """
    path = resources.files("netequiv") / "data" / "horse" / "horse.obj"
    with resources.as_file(path) as file:
        return load_obj(file)


@dataclass(frozen=True)
class Camera:
    """A perspective camera on a sphere around the origin, looking at the origin, z up.

    Parameters
    ----------
    elevation : float
        Degrees above the xy plane (negative: below).
    azimuth : float
        Degrees from the x axis towards the y axis.
    distance : float
        Distance from the origin.
    field_of_view : float
        Full opening angle of the image, in degrees, both horizontally and vertically.
    """

    elevation: float
    azimuth: float = -90.0
    distance: float = 4.0
    field_of_view: float = 30.0

    def position(self):
        """Return the camera centre in world coordinates."""
        elevation, azimuth = np.radians(self.elevation), np.radians(self.azimuth)
        direction = np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])
        return self.distance * direction

    def axes(self):
        """Return the rows right, up and forward (unit vectors) of the camera frame in world coordinates."""
        forward = -self.position() / self.distance
        right = np.cross(forward, [0.0, 0.0, 1.0])
        if np.linalg.norm(right) < 1e-12:
            raise ValueError(f"elevation={self.elevation} looks straight along the z axis; use |elevation| < 90.")
        right /= np.linalg.norm(right)
        up = np.cross(right, forward)
        return np.stack([right, up, forward])


def rotation_z(angle):
    """Return the matrix that turns points by ``angle`` radians about the z axis."""
    cosine, sine = np.cos(angle), np.sin(angle)
    return np.array([[cosine, -sine, 0.0], [sine, cosine, 0.0], [0.0, 0.0, 1.0]])


def _rasterise(points, depths, shades, size):
    """Z-buffer the projected triangles into a (size, size) image.

    ``points`` (F, 3, 2) are pixel coordinates (x right, y down, pixel centres at i + 0.5),
    ``depths`` (F, 3) the camera-space depths of the corners and ``shades`` (F,) each triangle's
    value. Every (triangle, pixel) pair inside the triangle's bounding box is tested at once.
    """
    image = np.zeros(size * size)
    a, b, c = points[:, 0], points[:, 1], points[:, 2]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])

    # Pixel ranges whose centres can fall inside each triangle, clipped to the image.
    low = np.clip(np.ceil(points.min(axis=1) - 0.5), 0, size).astype(np.int64)
    high = np.clip(np.floor(points.max(axis=1) - 0.5), -1, size - 1).astype(np.int64)
    widths = np.maximum(high[:, 0] - low[:, 0] + 1, 0)
    heights = np.maximum(high[:, 1] - low[:, 1] + 1, 0)
    counts = np.where(np.abs(area) > 1e-12, widths * heights, 0)
    if counts.sum() == 0:
        return image.reshape(size, size)

    # One row per candidate (triangle, pixel) pair.
    triangle = np.repeat(np.arange(len(points)), counts)
    offset = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    px = low[triangle, 0] + offset % widths[triangle]
    py = low[triangle, 1] + offset // widths[triangle]
    x, y = px + 0.5, py + 0.5

    # Barycentric coordinates from edge functions; the division by the signed area makes both
    # windings positive inside.
    ta, tb, tc = a[triangle], b[triangle], c[triangle]
    weight_a = ((tb[:, 0] - x) * (tc[:, 1] - y) - (tb[:, 1] - y) * (tc[:, 0] - x)) / area[triangle]
    weight_b = ((tc[:, 0] - x) * (ta[:, 1] - y) - (tc[:, 1] - y) * (ta[:, 0] - x)) / area[triangle]
    weight_c = 1.0 - weight_a - weight_b
    inside = (weight_a >= 0) & (weight_b >= 0) & (weight_c >= 0)
    triangle, pixel = triangle[inside], (py * size + px)[inside]

    # Perspective-correct depth: 1/z is linear in screen space; the nearest surface has the largest 1/z.
    inverse_depth = 1.0 / depths[triangle]
    inverse_depth = (
        weight_a[inside] * inverse_depth[:, 0] + weight_b[inside] * inverse_depth[:, 1] + weight_c[inside] * inverse_depth[:, 2]
    )
    order = np.lexsort((-inverse_depth, pixel))
    pixel, triangle = pixel[order], triangle[order]
    nearest = np.r_[True, pixel[1:] != pixel[:-1]]
    image[pixel[nearest]] = shades[triangle[nearest]]
    return image.reshape(size, size)


def render(mesh, camera, angle=0.0, size=64, supersample=2, light=(0.3, -0.5, 0.8), ambient=0.2):
    """Render one grayscale image of ``mesh`` turned by ``angle`` about the z axis.

    Parameters
    ----------
    mesh : Mesh
    camera : Camera
    angle : float
        Rotation of the mesh about the z axis, in radians.
    size : int
        Width and height of the image in pixels.
    supersample : int
        Render at ``supersample * size`` and average blocks (1 turns anti-aliasing off).
    light : sequence of 3 floats
        Direction towards the light, in world coordinates (fixed while the mesh turns).
    ambient : float
        Value of a surface facing away from the light; a surface facing it is 1.

    Returns
    -------
    image : ndarray of shape (size, size)
        Values in [0, 1]; row 0 is the top of the image; 0 is background.
    """
    if size < 1 or supersample < 1:
        raise ValueError(f"size={size} and supersample={supersample} must both be positive integers.")
    resolution = size * supersample
    vertices = mesh.vertices @ rotation_z(angle).T
    triangles = vertices[mesh.faces]  # (F, 3, 3)

    # Flat shading with normals turned towards the camera, so that the mesh's winding order does not matter.
    normals = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
    lengths = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = normals / np.where(lengths > 0, lengths, 1.0)
    towards_camera = camera.position() - triangles.mean(axis=1)
    normals *= np.where(np.sum(normals * towards_camera, axis=1, keepdims=True) < 0, -1.0, 1.0)
    light = np.asarray(light, dtype=float) / np.linalg.norm(light)
    shades = ambient + (1.0 - ambient) * np.clip(normals @ light, 0.0, 1.0)

    # Camera coordinates, then the pinhole projection to pixel coordinates.
    local = (triangles - camera.position()) @ camera.axes().T  # (F, 3, 3): right, up, depth
    depths = local[..., 2]
    if np.any(depths <= 1e-6):
        raise ValueError(f"part of the mesh is behind the camera at distance {camera.distance}; move the camera further away.")
    focal = 0.5 * resolution / np.tan(np.radians(camera.field_of_view) / 2)
    points = np.stack(
        [0.5 * resolution + focal * local[..., 0] / depths, 0.5 * resolution - focal * local[..., 1] / depths], axis=-1
    )

    image = _rasterise(points, depths, shades, resolution)
    return image.reshape(size, supersample, size, supersample).mean(axis=(1, 3))


def render_turn(mesh, camera, n_angles, size=64, supersample=2, cache_dir=None, progress=False):
    """Render the frames of one full turn: frame k shows the mesh at ``2 pi k / n_angles``.

    Parameters
    ----------
    mesh : Mesh
    camera : Camera
    n_angles : int
    size, supersample : int
        See :func:`render`.
    cache_dir : path-like, default=None
        When given, frames are stored there as ``.npy`` under a name derived from every input
        above, and read back on the next call with the same inputs.
    progress : bool

    Returns
    -------
    frames : ndarray of shape (n_angles, size, size), float32
    """
    from tqdm.auto import tqdm

    path = None
    if cache_dir is not None:
        key = repr((RENDERER_VERSION, mesh.checksum(), asdict(camera), n_angles, size, supersample))
        path = Path(cache_dir) / f"frames_{hashlib.sha256(key.encode()).hexdigest()[:16]}.npy"
        if path.exists():
            logger.info("reading %d cached frames from %s", n_angles, path)
            return np.load(path)
    angles = 2 * np.pi * np.arange(n_angles) / n_angles
    frames = np.stack(
        [
            render(mesh, camera, angle, size=size, supersample=supersample)
            for angle in tqdm(angles, desc=f"rendering (elevation {camera.elevation:g})", disable=None if progress else True, leave=False)
        ]
    ).astype(np.float32)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, frames)
    return frames
