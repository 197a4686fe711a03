"""Phantom radiographs: procedural frontal chest X-rays that show given structured findings.

Radiographic convention: a PA view shows the patient's left on the image's right. The seed fixes the patient
(habitus, rotation, inspiration, exposure, noise); each finding draws with its own random stream, so adding a
finding changes only the region it occupies.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import numpy as np
from PIL import Image

from ..errors import UserError
from .mesh import findings_from_mesh, unmapped_tags  # noqa: F401  (the IU MeSH mapping belongs with the phantoms)

LATERALITIES = ("left", "right", "bilateral")
ZONES = ("upper", "middle", "lower")
SEVERITIES = ("mild", "small", "moderate", "large", "severe")
_SEVERITY_LEVEL = {"mild": 1.0, "small": 1.0, "moderate": 2.0, "large": 3.0, "severe": 3.0, None: 2.0}
# Labels and whether they take a side (a missing side is then drawn from the finding's own random stream).
LABELS = {
    "cardiomegaly": False, "pleural_effusion": True, "pneumothorax": True, "opacity": True, "consolidation": True,
    "atelectasis": True, "nodule": True, "mass": True, "calcified_granuloma": True, "edema": False,
    "vascular_congestion": False, "interstitial_markings": False, "scarring": True, "pleural_thickening": True,
    "hyperinflation": False, "low_lung_volumes": False, "elevated_hemidiaphragm": True, "central_line": True,
    "pacemaker": True, "sternotomy_wires": False, "endotracheal_tube": False, "surgical_clips": True,
    "rib_fracture": True, "degenerative_spine": False, "scoliosis": False, "tortuous_aorta": False,
    "calcified_aorta": False, "hiatal_hernia": False, "osteopenia": False,
}
# Drawn before the anatomy because they change its geometry.
_GEOMETRY = ("hyperinflation", "low_lung_volumes", "elevated_hemidiaphragm", "cardiomegaly", "scoliosis",
             "tortuous_aorta", "osteopenia")


def normalize_finding(finding: dict) -> dict:
    """Check a structured finding and fill missing keys with None."""
    if not isinstance(finding, dict) or finding.get("label") not in LABELS:
        raise UserError(f"finding label must be one of {sorted(LABELS)}; got {finding!r}")
    out = {"label": finding["label"]}
    for key, allowed in (("laterality", LATERALITIES), ("zone", ZONES), ("severity", SEVERITIES)):
        value = finding.get(key)
        if value is not None and value not in allowed:
            raise UserError(f"finding {key} must be one of {allowed} or None; got {value!r}")
        out[key] = value
    return out


def _key(finding: dict) -> tuple:
    return tuple("" if finding[k] is None else finding[k] for k in ("label", "laterality", "zone", "severity"))


@dataclass
class Patient:
    """What the seed fixes: body shape, position, breath, exposure."""

    cx: float  # midline (rotation shifts it)
    body: float  # half-width of the body
    top: float  # lung apices
    dia: float  # diaphragm level (both sides) at inspiration
    lung_w: float  # half-width of each lung
    heart_w: float  # half-width of the heart
    gain: float
    gamma: float
    noise: float

    @classmethod
    def from_seed(cls, seed: int) -> "Patient":
        rng = np.random.default_rng([seed, 0])
        body = rng.uniform(0.40, 0.46)
        return cls(
            cx=0.5 + rng.uniform(-0.02, 0.02), body=body, top=rng.uniform(0.10, 0.14),
            dia=rng.uniform(0.70, 0.76), lung_w=body * rng.uniform(0.37, 0.41), heart_w=rng.uniform(0.15, 0.17),
            gain=rng.uniform(0.92, 1.05), gamma=rng.uniform(0.85, 1.15), noise=rng.uniform(0.008, 0.02),
        )


class Canvas:
    """Normalised coordinates over a square grid plus drawing helpers with compact support."""

    def __init__(self, size: int):
        self.size = size
        v, u = np.mgrid[0:size, 0:size].astype(np.float32)
        self.u, self.v = (u + 0.5) / size, (v + 0.5) / size
        self.px = 1.0 / size

    def bump(self, cu: float, cv: float, ru: float, rv: Optional[float] = None) -> np.ndarray:
        """A smooth bump, 1 at the centre and exactly 0 beyond the ellipse of radii (ru, rv)."""
        rv = ru if rv is None else rv
        d2 = ((self.u - cu) / ru) ** 2 + ((self.v - cv) / rv) ** 2
        return np.clip(1.0 - d2, 0.0, None) ** 2

    def disc(self, cu: float, cv: float, ru: float, rv: Optional[float] = None, edge: float = 1.5) -> np.ndarray:
        """A filled ellipse with an anti-aliased edge about `edge` pixels wide."""
        rv = ru if rv is None else rv
        r = np.sqrt(((self.u - cu) / ru) ** 2 + ((self.v - cv) / rv) ** 2)
        return np.clip((1.0 - r) * min(ru, rv) / (edge * self.px), 0.0, 1.0)

    def polyline(self, points: list, width: float) -> np.ndarray:
        """A line of the given width (normalised units) through points, 1 inside, anti-aliased."""
        out = np.zeros_like(self.u)
        for (u0, v0), (u1, v1) in zip(points[:-1], points[1:]):
            du, dv = u1 - u0, v1 - v0
            t = np.clip(((self.u - u0) * du + (self.v - v0) * dv) / max(du * du + dv * dv, 1e-12), 0.0, 1.0)
            d = np.hypot(self.u - (u0 + t * du), self.v - (v0 + t * dv))
            out = np.maximum(out, np.clip((width / 2 - d) / self.px + 0.5, 0.0, 1.0))
        return out

    def texture(self, rng: np.random.Generator, cells: int) -> np.ndarray:
        """Smooth noise in [0, 1] made by bilinear upsampling of a `cells` x `cells` random grid."""
        grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
        x = self.u * cells
        y = self.v * cells
        i, j = np.minimum(y.astype(int), cells - 1), np.minimum(x.astype(int), cells - 1)
        fy, fx = y - i, x - j
        top = grid[i, j] * (1 - fx) + grid[i, j + 1] * fx
        bottom = grid[i + 1, j] * (1 - fx) + grid[i + 1, j + 1] * fx
        return top * (1 - fy) + bottom * fy


class Phantom:
    """One patient drawn on one canvas; findings add to or reshape the density map."""

    def __init__(self, seed: int, size: int):
        self.seed, self.c, self.p = seed, Canvas(size), Patient.from_seed(seed)
        self.dia = {"right": self.p.dia, "left": self.p.dia + 0.015}  # the left dome sits a little lower
        self.level = self.p.dia  # diaphragm level of both sides together: the heart rests on it
        self.dome = 0.06
        self.heart_scale, self.air = 1.0, 0.40
        self.spine_amp, self.bone = 0.0, 1.0
        self.aorta = 1.0
        self.marking_gain = 1.0

    # geometry ---------------------------------------------------------------------------------------------------
    def side_u(self, side: str) -> float:
        """Centre of the lung of the patient's `side` (patient's left is the image's right)."""
        return self.p.cx + (1 if side == "left" else -1) * (self.p.lung_w + 0.035)

    def side_mask(self, side: str) -> np.ndarray:
        return (self.c.u >= self.p.cx) if side == "left" else (self.c.u < self.p.cx)

    def diaphragm(self, side: str) -> np.ndarray:
        """Height of the dome under each column of the given side."""
        t = (self.c.u - self.side_u(side)) / (self.p.lung_w * 1.2)
        return self.dia[side] - self.dome * np.clip(1 - t**2, 0, None)

    def lung(self, side: str, shrink: float = 0.0) -> np.ndarray:
        """Soft mask of one lung; `shrink` pulls the lateral and apical edges inwards (pneumothorax)."""
        c, p = self.c, self.p
        cu = self.side_u(side) + (-1 if side == "left" else 1) * shrink / 2
        half_w = p.lung_w - shrink / 2
        top = p.top + shrink * 0.8
        bottom = self.dia[side] + 0.06
        cv, half_h = (top + bottom) / 2, (bottom - top) / 2
        r = np.sqrt(((c.u - cu) / half_w) ** 2 + ((c.v - cv) / half_h) ** 2)
        inside = np.clip((1 - r) * half_w / (1.5 * c.px), 0, 1)
        below_dome = np.clip((self.diaphragm(side) - c.v) / (1.5 * c.px), 0, 1)
        return inside * below_dome * self.side_mask(side)

    def zone_v(self, side: str, zone: Optional[str]) -> float:
        frac = {"upper": 0.2, "middle": 0.5, "lower": 0.78, None: 0.55}[zone]
        return self.p.top + frac * (self.dia[side] - self.p.top)

    def spine_u(self) -> np.ndarray:
        return self.p.cx + self.spine_amp * np.sin(np.pi * (self.c.v - 0.1) / 0.7)

    # anatomy ----------------------------------------------------------------------------------------------------
    def anatomy(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Soft tissue, air and bone density maps of the normal patient (after geometric findings)."""
        c, p = self.c, self.p
        rng = np.random.default_rng([self.seed, 1])
        shoulders = np.clip((c.v - 0.02) / 0.08, 0, 1)
        body = c.disc(p.cx, 0.62, p.body, 0.62, edge=4) * shoulders
        soft = 0.55 * body
        self.lungs = {s: self.lung(s) for s in ("right", "left")}
        heart_w = p.heart_w * self.heart_scale
        heart_h = 0.16 * (1 + 0.5 * (self.heart_scale - 1))
        heart_cv = self.level + 0.015 - 0.13
        heart = np.maximum(
            c.disc(p.cx + 0.04 + 0.5 * (heart_w - p.heart_w), heart_cv, heart_w, heart_h, edge=2),
            c.disc(p.cx - 0.02, heart_cv - 0.03, heart_w * 0.6, heart_h * 0.85, edge=2),
        )
        mediastinum = c.disc(p.cx, 0.26, 0.065, 0.24, edge=2)
        knob = c.disc(p.cx + 0.045 * self.aorta, 0.27, 0.03 * self.aorta, 0.03, edge=2)
        self.heart = heart
        solid = np.maximum.reduce([heart, mediastinum, knob])
        self.markings = c.texture(rng, 24) * 0.5 + c.texture(rng, 9) * 0.5
        air = np.zeros_like(c.u)
        for s in ("right", "left"):
            hilum = c.bump(self.side_u(s) + (0.06 if s == "right" else -0.06), 0.42, 0.07, 0.09)
            vessels = self.marking_gain * (0.05 * self.markings + 0.08 * hilum)
            air += self.lungs[s] * (self.air - vessels)
        air *= 1 - solid
        gastric = c.disc(self.side_u("left") + 0.03, self.dia["left"] + 0.05, 0.045, 0.03, edge=3)
        air += 0.25 * gastric * (c.v > self.dia["left"] + 0.03)
        bone = self.ribs() + self.clavicles() + self.spine()
        return soft, air, bone * self.bone

    def ribs(self) -> np.ndarray:
        c, p = self.c, self.p
        out = np.zeros_like(c.u)
        spacing = (self.p.dia - p.top) / 9.5
        self.rib_curves = []
        for i in range(10):
            for side, sign in (("right", -1), ("left", 1)):
                t = (c.u - p.cx) * sign
                reach = p.lung_w * 2 + 0.05
                v0 = p.top + 0.01 + i * spacing
                curve = v0 - 0.05 * (t / reach) + 0.11 * (t / reach) ** 2
                band = np.clip((0.011 - np.abs(c.v - curve)) / c.px + 0.5, 0, 1)
                out += 0.11 * band * (t > 0.025) * (t < reach)
                self.rib_curves.append((side, i, v0))
        return out

    def clavicles(self) -> np.ndarray:
        p = self.p
        return 0.14 * np.maximum(
            self.c.polyline([(p.cx - 0.04, 0.14), (p.cx - 0.30, 0.09)], 0.025),
            self.c.polyline([(p.cx + 0.04, 0.14), (p.cx + 0.30, 0.09)], 0.025),
        )

    def spine(self) -> np.ndarray:
        c = self.c
        column = np.clip((0.03 - np.abs(c.u - self.spine_u())) / c.px + 0.5, 0, 1)
        discs = 0.75 + 0.25 * (np.abs(np.sin(np.pi * c.v / 0.045)) > 0.25)
        return 0.09 * column * discs

    # rendering --------------------------------------------------------------------------------------------------
    def to_image(self, density: np.ndarray) -> Image.Image:
        noise = np.random.default_rng([self.seed, 2]).normal(0, self.p.noise, density.shape).astype(np.float32)
        image = np.clip(density, 0, 1) ** self.p.gamma * self.p.gain + noise
        return Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8), mode="L")


def _sides(finding: dict, rng: np.random.Generator, default: Optional[str] = None) -> list:
    side = finding["laterality"]
    if side == "bilateral":
        return ["right", "left"]
    if side is None:
        side = default or ("right" if rng.random() < 0.5 else "left")
    return [side]


def _reshape(ph: Phantom, finding: dict, rng: np.random.Generator) -> None:
    """Findings that change the anatomy itself."""
    label, level = finding["label"], _SEVERITY_LEVEL[finding["severity"]]
    if label == "hyperinflation":
        for s in ph.dia:
            ph.dia[s] += 0.03 + 0.02 * level
        ph.level += 0.03 + 0.02 * level
        ph.dome *= 0.4
        ph.air += 0.06
    elif label == "low_lung_volumes":
        for s in ph.dia:
            ph.dia[s] -= 0.04 + 0.02 * level
        ph.level -= 0.04 + 0.02 * level
        ph.marking_gain = 1.5
    elif label == "elevated_hemidiaphragm":
        for s in _sides(finding, rng):
            ph.dia[s] -= 0.04 + 0.025 * level
    elif label == "cardiomegaly":
        ph.heart_scale = max(ph.heart_scale, 1.0 + 0.16 * level)
    elif label == "scoliosis":
        ph.spine_amp = (0.012 + 0.012 * level) * (1 if rng.random() < 0.5 else -1)
    elif label == "tortuous_aorta":
        ph.aorta = 1.3 + 0.15 * level
    elif label == "osteopenia":
        ph.bone = 0.5


@dataclass
class _Ink:
    """The three layers a finding draws into (soft tissue, air, bone), changed in place."""

    soft: np.ndarray
    air: np.ndarray
    bone: np.ndarray


def _level(f: dict) -> float:
    return _SEVERITY_LEVEL[f["severity"]]


def _effusion(ph: Phantom, f: dict, rng: np.random.Generator, ink: _Ink) -> None:
    c, p = ph.c, ph.p
    for s in _sides(f, rng):
        lateral = np.abs(c.u - ph.side_u(s)) / p.lung_w
        height = 0.03 + 0.05 * _level(f) + 0.04 * np.clip(lateral, 0, 1.2)  # the meniscus climbs laterally
        fluid = np.clip((c.v - (ph.dia[s] - height)) / (2 * c.px), 0, 1) * ph.lungs[s]
        ink.air -= fluid * np.clip(ink.air, 0, None) * 0.9
        ink.soft += 0.04 * fluid


def _pneumothorax(ph: Phantom, f: dict, rng: np.random.Generator, ink: _Ink) -> None:
    c, level = ph.c, _level(f)
    for s in _sides(f, rng):
        rim = np.clip(ph.lungs[s] - ph.lung(s, shrink=0.03 + 0.035 * level), 0, 1)
        ink.air += rim * (0.1 + 0.08 * (ph.markings - 0.3))  # no lung markings beyond the pleural line
        inner = ph.lung(s, shrink=0.03 + 0.035 * level)
        line = np.clip(inner - ph.lung(s, shrink=0.03 + 0.035 * level + 2.5 * c.px), 0, 1)
        ink.air -= 0.12 * line


def _opacity(ph, f, rng, level, lung, cu, cv, ink) -> None:
    patch = ph.c.bump(cu, cv, 0.06 + 0.025 * level, 0.05 + 0.02 * level) * (0.4 + ph.markings)
    ink.soft += 0.12 * (0.6 + 0.3 * level) * patch * lung


def _consolidation(ph, f, rng, level, lung, cu, cv, ink) -> None:
    patch = ph.c.disc(cu, cv, 0.07 + 0.02 * level, 0.06 + 0.015 * level, edge=4)
    ink.soft += (0.22 + 0.06 * level) * patch * lung


def _band(ph, f, rng, level, lung, cu, cv, ink) -> None:
    """Atelectasis (one plate) or scarring (two or three thin strands)."""
    atelectasis = f["label"] == "atelectasis"
    n = 1 if atelectasis else 2 + int(rng.integers(0, 2))
    for _ in range(n):
        tilt = rng.uniform(-0.04, 0.04) if atelectasis else rng.uniform(-0.08, 0.08)
        du = 0.05 + 0.015 * level
        width = 0.012 if atelectasis else 0.006
        line = ph.c.polyline([(cu - du, cv - tilt), (cu + du, cv + tilt)], width)
        ink.soft += (0.22 if atelectasis else 0.16) * line * lung
        cv += rng.uniform(0.02, 0.05)


def _round(ph, f, rng, level, lung, cu, cv, ink) -> None:
    """A nodule or a mass."""
    radius = (0.012 + 0.004 * level) if f["label"] == "nodule" else (0.04 + 0.012 * level)
    ink.soft += 0.35 * ph.c.disc(cu, cv, radius, radius * rng.uniform(0.85, 1.15), edge=1.5) * lung


def _granuloma(ph, f, rng, level, lung, cu, cv, ink) -> None:
    count = 1 if f["severity"] in (None, "mild", "small") else 3
    for _ in range(count):
        ink.bone += 0.6 * ph.c.disc(cu, cv, 0.009, edge=1) * lung
        cu += rng.uniform(-0.06, 0.06)
        cv += rng.uniform(-0.05, 0.05)


def _in_lung(shape: Callable) -> Callable:
    """A parenchymal finding: `shape` drawn at a random spot of the finding's zone, in each side's lung."""

    def draw(ph: Phantom, f: dict, rng: np.random.Generator, ink: _Ink) -> None:
        for s in _sides(f, rng):
            cu = ph.side_u(s) + rng.uniform(-0.3, 0.3) * ph.p.lung_w
            cv = ph.zone_v(s, f["zone"]) + rng.uniform(-0.04, 0.04)
            shape(ph, f, rng, _level(f), ph.lungs[s], cu, cv, ink)

    return draw


def _edema(ph, f, rng, level, s, hilum_u, ink) -> None:
    c = ph.c
    haze = c.bump(hilum_u, 0.45, 0.16 + 0.02 * level, 0.2) * (0.07 + 0.04 * level)
    lines = np.abs(np.sin(np.pi * c.v / 0.02)) > 0.85  # Kerley B lines at the lateral bases
    kerley = lines * c.bump(ph.side_u(s), ph.dia[s] - 0.06, ph.p.lung_w, 0.08)
    kerley *= np.abs(c.u - ph.side_u(s)) > 0.5 * ph.p.lung_w
    ink.soft += (haze + 0.08 * kerley) * ph.lungs[s]


def _congestion(ph, f, rng, level, s, hilum_u, ink) -> None:
    ink.soft += (0.06 + 0.03 * level) * ph.c.bump(hilum_u, 0.40, 0.09, 0.14) * ph.lungs[s]


def _reticular(ph, f, rng, level, s, hilum_u, ink) -> None:
    fine = Canvas(ph.c.size).texture(rng, 40)
    reticular = np.clip(1 - np.abs(fine - 0.5) / 0.06, 0, 1)
    ink.soft += (0.05 + 0.02 * level) * reticular * ph.lungs[s]


def _perihilar(shape: Callable) -> Callable:
    """A diffuse finding drawn from each hilum (both sides unless one is named)."""

    def draw(ph: Phantom, f: dict, rng: np.random.Generator, ink: _Ink) -> None:
        sides = ["right", "left"] if f["laterality"] in (None, "bilateral") else [f["laterality"]]
        for s in sides:
            hilum_u = ph.side_u(s) + (0.06 if s == "right" else -0.06)
            shape(ph, f, rng, _level(f), s, hilum_u, ink)

    return draw


def _pleural_thickening(ph: Phantom, f: dict, rng: np.random.Generator, ink: _Ink) -> None:
    c = ph.c
    for s in _sides(f, rng):
        band = np.clip(ph.lungs[s] - ph.lung(s, shrink=0.015 + 0.005 * _level(f)), 0, 1)
        band *= np.abs(c.v - ph.zone_v(s, f["zone"])) < 0.15
        ink.soft += 0.18 * band


def _central_line(ph: Phantom, f: dict, rng: np.random.Generator, ink: _Ink) -> None:
    p = ph.p
    for s in _sides(f, rng, default="right"):
        sign = -1 if s == "right" else 1
        pts = [(p.cx + sign * 0.22, 0.1), (p.cx + sign * 0.12, 0.16), (p.cx + sign * 0.05, 0.22),
               (p.cx - 0.045, 0.33 + 0.02 * rng.random())]
        ink.bone += 0.45 * ph.c.polyline(pts, 0.007)


def _pacemaker(ph: Phantom, f: dict, rng: np.random.Generator, ink: _Ink) -> None:
    c, p = ph.c, ph.p
    for s in _sides(f, rng, default="left"):
        sign = -1 if s == "right" else 1
        gu, gv = p.cx + sign * 0.22, 0.17
        ink.bone += 0.8 * c.disc(gu, gv, 0.04, 0.028, edge=1.5)
        for end in ((p.cx + 0.02, ph.level - 0.125), (p.cx + 0.07, ph.level - 0.045)):
            ink.bone += 0.4 * c.polyline([(gu, gv), (p.cx + sign * 0.08, 0.2), (p.cx - 0.03, 0.34), end], 0.005)


def _sternotomy_wires(ph: Phantom, f: dict, rng: np.random.Generator, ink: _Ink) -> None:
    c, p = ph.c, ph.p
    for i in range(5):
        cv = 0.22 + i * 0.065
        ring = c.disc(p.cx, cv, 0.016, 0.011, edge=1) - c.disc(p.cx, cv, 0.009, 0.005, edge=1)
        ink.bone += 0.7 * np.clip(ring, 0, 1)


def _endotracheal_tube(ph: Phantom, f: dict, rng: np.random.Generator, ink: _Ink) -> None:
    c, p = ph.c, ph.p
    tip = 0.20 + 0.02 * rng.random()
    ink.bone += 0.35 * (c.polyline([(p.cx - 0.008, 0.0), (p.cx - 0.008, tip)], 0.004)
                        + c.polyline([(p.cx + 0.008, 0.0), (p.cx + 0.008, tip)], 0.004))


def _surgical_clips(ph: Phantom, f: dict, rng: np.random.Generator, ink: _Ink) -> None:
    c, p = ph.c, ph.p
    for s in _sides(f, rng):
        cu, cv = ph.side_u(s) + rng.uniform(-0.4, 0.4) * p.lung_w, ph.zone_v(s, f["zone"])
        for _ in range(3):
            a = rng.uniform(0, np.pi)
            ink.bone += 0.7 * c.polyline([(cu, cv), (cu + 0.015 * np.cos(a), cv + 0.015 * np.sin(a))], 0.004)
            cu, cv = cu + rng.uniform(-0.03, 0.03), cv + rng.uniform(0.01, 0.03)


def _rib_fracture(ph: Phantom, f: dict, rng: np.random.Generator, ink: _Ink) -> None:
    c, p = ph.c, ph.p
    for s in _sides(f, rng):
        ribs = [r for r in ph.rib_curves if r[0] == s]
        lo, hi = {"upper": (1, 4), "middle": (4, 7), "lower": (6, 9), None: (2, 8)}[f["zone"]]
        _, i, v0 = ribs[int(rng.integers(lo, hi))]
        t = rng.uniform(0.45, 0.75) * (p.lung_w * 2)
        sign = -1 if s == "right" else 1
        reach = p.lung_w * 2 + 0.05
        cu, cv = p.cx + sign * t, v0 - 0.05 * (t / reach) + 0.11 * (t / reach) ** 2
        gap = c.polyline([(cu - 0.004, cv - 0.02), (cu + 0.004, cv + 0.02)], 0.012)
        ink.bone -= 0.11 * gap * (ink.bone > 0.05)
        ink.bone += 0.22 * c.bump(cu + sign * 0.014, cv + 0.005, 0.016, 0.013)  # callus and step


def _degenerative_spine(ph: Phantom, f: dict, rng: np.random.Generator, ink: _Ink) -> None:
    c = ph.c
    spine_u = ph.spine_u()
    for j in range(int(4 + 2 * _level(f))):
        cv = 0.3 + 0.055 * j + rng.uniform(-0.01, 0.01)
        for sign in (-1, 1):
            u0 = float(spine_u[int(cv * c.size), 0]) + sign * 0.033
            ink.bone += 0.3 * c.polyline([(u0, cv), (u0 + sign * 0.012, cv + 0.006)], 0.007)
        ink.bone += 0.08 * (np.abs(c.v - cv) < 0.004) * (np.abs(c.u - spine_u) < 0.03)


def _calcified_aorta(ph: Phantom, f: dict, rng: np.random.Generator, ink: _Ink) -> None:
    c, p = ph.c, ph.p
    cu = p.cx + 0.045 * ph.aorta
    outer = c.disc(cu, 0.27, 0.03 * ph.aorta + 0.004, 0.034, edge=1)
    ring = outer - c.disc(cu - 0.004, 0.27, 0.03 * ph.aorta, 0.031, edge=1)
    ink.bone += 0.5 * np.clip(ring, 0, 1) * (c.u > cu)


def _tortuous_aorta(ph: Phantom, f: dict, rng: np.random.Generator, ink: _Ink) -> None:
    p = ph.p
    path = [(p.cx + 0.045 * ph.aorta, 0.28), (p.cx + 0.03 + 0.03 * _level(f), 0.42), (p.cx + 0.03, 0.56)]
    ink.soft += 0.12 * ph.c.polyline(path, 0.025) * (1 - ph.heart)


def _hiatal_hernia(ph: Phantom, f: dict, rng: np.random.Generator, ink: _Ink) -> None:
    c, p = ph.c, ph.p
    cu, cv = p.cx + 0.02, ph.level - 0.055
    sac = c.disc(cu, cv, 0.05 + 0.012 * _level(f), 0.05, edge=2)
    ink.soft += 0.1 * sac
    ink.air += 0.3 * sac * (c.v < cv)  # the gas cap above the air-fluid level


# How each finding is drawn over the anatomy; each writes only inside its own region.
_DRAW: dict[str, Callable[[Phantom, dict, np.random.Generator, _Ink], None]] = {
    "pleural_effusion": _effusion,
    "pneumothorax": _pneumothorax,
    "opacity": _in_lung(_opacity),
    "consolidation": _in_lung(_consolidation),
    "atelectasis": _in_lung(_band),
    "scarring": _in_lung(_band),
    "nodule": _in_lung(_round),
    "mass": _in_lung(_round),
    "calcified_granuloma": _in_lung(_granuloma),
    "edema": _perihilar(_edema),
    "vascular_congestion": _perihilar(_congestion),
    "interstitial_markings": _perihilar(_reticular),
    "pleural_thickening": _pleural_thickening,
    "central_line": _central_line,
    "pacemaker": _pacemaker,
    "sternotomy_wires": _sternotomy_wires,
    "endotracheal_tube": _endotracheal_tube,
    "surgical_clips": _surgical_clips,
    "rib_fracture": _rib_fracture,
    "degenerative_spine": _degenerative_spine,
    "calcified_aorta": _calcified_aorta,
    "tortuous_aorta": _tortuous_aorta,
    "hiatal_hernia": _hiatal_hernia,
}


def render(findings: Iterable[dict] = (), seed: int = 0, size: int = 256) -> Image.Image:
    """Draw a frontal chest radiograph of patient `seed` showing `findings` (grayscale, `size` x `size`)."""
    findings = sorted((normalize_finding(f) for f in findings), key=_key)
    ph = Phantom(seed, size)
    seen: dict = {}
    streams = []
    for f in findings:
        n = seen[_key(f)] = seen.get(_key(f), -1) + 1
        streams.append((f, np.random.default_rng([seed, 3, zlib.crc32(repr((_key(f), n)).encode())])))
    for f, rng in streams:
        if f["label"] in _GEOMETRY:
            _reshape(ph, f, rng)
    ink = _Ink(*ph.anatomy())
    for f, rng in streams:
        if f["label"] in _DRAW:  # the others (cardiomegaly, ...) changed the anatomy's shape above
            _DRAW[f["label"]](ph, f, rng, ink)
    return ph.to_image(ink.soft - ink.air + ink.bone + 0.06)


def gallery(out_path: str, seed: int = 7, size: int = 192) -> str:
    """Write a labelled grid: a normal phantom, then one tile per finding label, same patient."""
    from PIL import ImageDraw

    tiles = [("normal", render([], seed, size))]
    for label in LABELS:
        side = {"laterality": "left"} if LABELS[label] else {}
        tiles.append((label.replace("_", " "), render([{"label": label, "severity": "moderate", **side}], seed, size)))
    cols = 6
    rows = (len(tiles) + cols - 1) // cols
    sheet = Image.new("L", (cols * size, rows * (size + 16)), 0)
    draw = ImageDraw.Draw(sheet)
    for k, (name, tile) in enumerate(tiles):
        x, y = (k % cols) * size, (k // cols) * (size + 16)
        sheet.paste(tile, (x, y + 16))
        draw.text((x + 4, y + 2), name, fill=255)
    sheet.save(out_path)
    return out_path
