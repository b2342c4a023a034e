"""Procedural street scenes with exact Cityscapes labels.

Back to front: sky, buildings, trees, a wall and grass, the sidewalk and the road in perspective, a
fence, poles carrying traffic lights, signs and lamps, parked bicycles, people, cars and a bus, and
sometimes the ego vehicle's bonnet (ignore). Sizes are fractions of the canvas, except the thin parts
(poles, sign posts, fence wires, bicycle frames), whose widths are a few pixels of a 2048-wide scene:
an 8x smaller view cannot resolve them, the full-resolution patches can. That is the regime MagNet is
for. Every colour is drawn from the seed, with a global light level and tint, so no class is one RGB
value.
"""

from __future__ import annotations

import numpy as np

from magnet_triton.errors import MagnetError
from magnet_triton.synthetic import classes as c
from magnet_triton.synthetic.canvas import Canvas, Colour

#: Largest side accepted: a 2048 x 1024 scene is about 8 MB of labels and 25 MB of float image.
MAX_SIDE = 8192


def _jitter(rng: np.random.Generator, colour: Colour, amount: float = 25.0) -> Colour:
    r, g, b = np.clip(np.asarray(colour, np.float32) + rng.uniform(-amount, amount, 3), 0, 255)
    return (float(r), float(g), float(b))


def scene(width: int = 2048, height: int = 1024, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A street scene and its labels, drawn from ``seed``.

    Returns:
        image: H x W x 3 uint8 RGB.
        labels: H x W uint8 Cityscapes train ids (:mod:`magnet_triton.synthetic.classes`), 255 where
            the ego vehicle's bonnet is (ignore). Every class of ``classes.DRAWN`` is drawn, but a later shape
            can hide one: at 1024 x 512, seed 0's fence is behind the bus (seeds 0 to 11 at
            512 x 256, 1 to 11 at 1024 x 512 and 0 to 3 at 2048 x 1024 show every class).

    The same ``(width, height, seed)`` always gives the same arrays.

    Raises:
        MagnetError: a size below 16 x 8 or above :data:`MAX_SIDE`.
    """
    return scene_canvas(width, height, seed).finish()


class _Scene(Canvas):
    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        light = self.rng.uniform(0.75, 1.2) * self.rng.uniform(0.92, 1.08, 3).astype(np.float32)
        noise = self.rng.normal(0.0, 3.0, self.image.shape).astype(np.float32)
        image = np.clip(self.image * light + noise, 0, 255).astype(np.uint8)
        return image, self.labels.copy()


def scene_canvas(width: int, height: int, seed: int) -> _Scene:
    """The drawn canvas of :func:`scene` (its ``strokes`` record every shape), before light and noise."""
    for name, value, low in (("width", width, 16), ("height", height, 8)):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, np.integer))
            or not low <= value <= MAX_SIDE
        ):
            raise MagnetError(f"scene {name} must be an integer in [{low}, {MAX_SIDE}], got {value!r}")
    canvas = _Scene(int(width), int(height), np.random.default_rng(seed))
    _draw(canvas)
    return canvas


def _draw(cv: _Scene) -> None:
    rng, w, h = cv.rng, float(cv.width), float(cv.height)
    px = w / 2048.0  # one pixel of a full-resolution (2048-wide) scene
    horizon = h * rng.uniform(0.42, 0.52)
    base = horizon + 0.04 * h  # where the buildings meet the sidewalk

    # Sky: clear blue or overcast grey, lighter towards the horizon.
    sky = _jitter(rng, (120, 165, 225) if rng.random() < 0.7 else (175, 180, 190), 15)
    cv.rect(0, 0, w, base, sky, c.SKY, texture=0.02, shade=-0.25)

    # Buildings, with gaps of sky between some of them, and windows in the building's class.
    x = -rng.uniform(0, 0.05) * w
    while x < w:
        bw = rng.uniform(0.08, 0.22) * w
        if rng.random() < 0.85:
            top = rng.uniform(0.03, 0.3) * h
            wall_colour = _jitter(
                rng, rng.choice([(150, 140, 130), (180, 170, 150), (120, 110, 120), (160, 90, 70)])
            )
            cv.rect(x, top, x + bw, base, wall_colour, c.BUILDING, texture=0.06, shade=0.2)
            window = tuple(0.4 * v for v in wall_colour)
            step_x, step_y = rng.uniform(0.015, 0.03) * w, rng.uniform(0.04, 0.07) * h
            for wy in np.arange(top + step_y / 2, base - step_y, step_y):
                for wx in np.arange(x + step_x / 2, x + bw - step_x, step_x):
                    cv.rect(wx, wy, wx + 0.5 * step_x, wy + 0.55 * step_y, window, c.BUILDING, texture=0.1)
        x += bw + (rng.uniform(0.01, 0.05) * w if rng.random() < 0.3 else 0)

    # Trees: a trunk and a crown (both vegetation in Cityscapes), and a hedge.
    for _ in range(int(rng.integers(2, 5))):
        tx, crown = rng.uniform(0, w), rng.uniform(0.06, 0.12) * h
        cv.rect(tx - 6 * px, base - 2.2 * crown, tx + 6 * px, base, (90, 65, 40), c.VEGETATION, texture=0.1)
        green = _jitter(rng, (55, 110, 45))
        cv.ellipse(tx, base - 2.4 * crown, 1.3 * crown, crown, green, c.VEGETATION, texture=0.25)
    hedge_x = rng.uniform(0, 0.6) * w
    cv.rect(
        hedge_x,
        base - 0.05 * h,
        hedge_x + rng.uniform(0.1, 0.3) * w,
        base,
        _jitter(rng, (60, 100, 50)),
        c.VEGETATION,
        texture=0.25,
    )

    # Sidewalk from the building line down; a low wall and a strip of grass on it, on the side of the
    # street the bus is not on (so the bus, drawn later, does not hide them).
    bus_x = rng.uniform(0.1, 0.6) * w
    free = (0.55 * w, 0.95 * w) if bus_x < 0.35 * w else (0.02 * w, 0.42 * w)
    cv.rect(0, base, w, h, _jitter(rng, (175, 165, 160), 15), c.SIDEWALK, texture=0.05)
    for label, colour, top, bottom in (
        (c.WALL, (160, 155, 145), base - 0.04 * h, base + 0.01 * h),
        (c.TERRAIN, (110, 140, 60), base + 0.01 * h, base + 0.03 * h),
    ):
        start = rng.uniform(free[0], free[1] - 0.12 * w)
        cv.rect(
            start, top, start + rng.uniform(0.08, 0.12) * w, bottom, _jitter(rng, colour), label, texture=0.15
        )

    # The road as a trapezoid towards a vanishing point, with lane dashes.
    kerb = base + 0.03 * h
    vx = rng.uniform(0.4, 0.6) * w
    road = [(vx - 0.08 * w, kerb), (vx + 0.08 * w, kerb), (1.25 * w, h), (-0.25 * w, h)]
    cv.polygon(road, _jitter(rng, (80, 80, 85), 10), c.ROAD, texture=0.06)
    for t in np.arange(0.05, 1.0, 0.12):
        y0, y1 = kerb + t * (h - kerb), kerb + (t + 0.05) * (h - kerb)
        cv.rect(vx - (1 + 6 * t) * px, y0, vx + (1 + 6 * t) * px, y1, (225, 225, 215), c.ROAD, texture=0.03)

    _fence(cv, px, kerb)
    for pole_x in np.sort(rng.uniform(0.02, 0.98, int(rng.integers(3, 6)))) * w:
        _pole(cv, px, pole_x, kerb, h)
    # The first pole always carries a light and a sign, so both classes exist in every scene.
    _pole(cv, px, rng.uniform(0.05, 0.95) * w, kerb, h, light=True, sign=True)
    for _ in range(int(rng.integers(1, 4))):
        _bicycle(cv, px, rng.uniform(0.05, 0.95) * w, kerb + rng.uniform(0.03, 0.1) * h, h)
    for _ in range(int(rng.integers(1, 5))):
        _person(cv, rng.uniform(0.03, 0.97) * w, kerb + rng.uniform(0.02, 0.15) * h, h)
    _bus(cv, bus_x, kerb + 0.02 * h, h)
    for _ in range(int(rng.integers(2, 5))):
        depth = rng.uniform(0.1, 1.0)  # 0 far (at the kerb), 1 near (the bottom of the image)
        _car(
            cv,
            vx + rng.uniform(-0.35, 0.35) * w * (0.3 + depth),
            kerb + depth * 0.75 * (h - kerb),
            h * (0.06 + 0.12 * depth),
        )
    if rng.random() < 0.5:  # the ego vehicle's bonnet: Cityscapes' "ignore"
        cv.ellipse(w / 2, h * 1.1, 0.7 * w, 0.16 * h, (30, 30, 35), c.IGNORE, texture=0.05)


def _fence(cv: _Scene, px: float, kerb: float) -> None:
    """Posts and wires: everything in it is a few full-resolution pixels wide."""
    rng, h = cv.rng, float(cv.height)
    x0 = rng.uniform(0, 0.5) * cv.width
    x1 = x0 + rng.uniform(0.2, 0.45) * cv.width
    top = kerb - rng.uniform(0.05, 0.08) * h
    colour = _jitter(rng, (110, 110, 105))
    for x in np.arange(x0, x1 + 1, rng.uniform(0.02, 0.04) * cv.width):
        cv.line((x, top), (x, kerb), 4 * px, colour, c.FENCE)
    for y in np.linspace(top + 2 * px, kerb - 0.2 * (kerb - top), int(rng.integers(2, 5))):
        cv.line((x0, y), (x1, y), 2 * px, colour, c.FENCE)


def _pole(
    cv: _Scene, px: float, x: float, kerb: float, h: float, *, light: bool = False, sign: bool = False
) -> None:
    """A pole standing on the sidewalk, with a traffic light, a sign, or a lamp arm."""
    rng = cv.rng
    foot = kerb + rng.uniform(0.0, 0.04) * h
    top = foot - rng.uniform(0.3, 0.45) * h
    grey = _jitter(rng, (95, 95, 100), 20)
    cv.line((x, top), (x, foot), 4 * px, grey, c.POLE, texture=0.05)
    light = light or rng.random() < 0.3
    sign = sign or rng.random() < 0.4
    if light:
        box_w, box_h = 14 * px, 36 * px
        cv.rect(x - box_w / 2, top - box_h, x + box_w / 2, top, (35, 35, 30), c.TRAFFIC_LIGHT)
        lit = int(rng.integers(0, 3))
        for k, colour in enumerate(((230, 40, 30), (240, 200, 40), (50, 220, 90))):
            lamp = colour if k == lit else tuple(0.3 * v for v in colour)
            cv.ellipse(x, top - box_h + (6 + 12 * k) * px, 4 * px, 4 * px, lamp, c.TRAFFIC_LIGHT)
    elif rng.random() < 0.5:  # a street lamp: an arm and a head, both pole
        cv.line((x, top), (x + 40 * px, top - 6 * px), 3 * px, grey, c.POLE)
    if sign:
        sy = top + rng.uniform(0.05, 0.12) * h
        if rng.random() < 0.5:
            cv.ellipse(x, sy, 16 * px, 16 * px, (215, 40, 35), c.TRAFFIC_SIGN)
            cv.ellipse(x, sy, 11 * px, 11 * px, (235, 235, 230), c.TRAFFIC_SIGN)
        else:
            cv.rect(x - 14 * px, sy - 14 * px, x + 14 * px, sy + 14 * px, (40, 80, 180), c.TRAFFIC_SIGN)


def _bicycle(cv: _Scene, px: float, x: float, ground: float, h: float) -> None:
    """Two wheels and a frame of 3-pixel tubes."""
    rng = cv.rng
    r = rng.uniform(0.028, 0.04) * h
    colour = _jitter(rng, rng.choice([(40, 40, 45), (160, 30, 30), (30, 60, 150)]), 20)
    back, front = (x - 1.4 * r, ground - r), (x + 1.4 * r, ground - r)
    seat, bar = (x - 0.5 * r, ground - 2.1 * r), (x + 1.0 * r, ground - 2.2 * r)
    crank = (x, ground - r)
    for centre in (back, front):
        cv.ring(*centre, r, 3 * px, colour, c.BICYCLE)
    for p0, p1 in ((back, crank), (crank, seat), (seat, back), (seat, bar), (bar, crank), (bar, front)):
        cv.line(p0, p1, 3 * px, colour, c.BICYCLE)


def _person(cv: _Scene, x: float, ground: float, h: float) -> None:
    """Legs, a body, arms and a head."""
    rng = cv.rng
    tall = rng.uniform(0.1, 0.16) * h
    cloth = _jitter(rng, rng.choice([(60, 60, 90), (140, 40, 40), (50, 90, 60), (180, 170, 150)]), 30)
    skin = _jitter(rng, (200, 160, 130), 30)
    unit = tall / 8
    for dx in (-0.6, 0.6):
        cv.line((x, ground - 4 * unit), (x + dx * unit, ground), 0.8 * unit, (40, 40, 50), c.PERSON)
    cv.rect(x - unit, ground - 7 * unit, x + unit, ground - 3.8 * unit, cloth, c.PERSON, texture=0.08)
    for dx in (-1.6, 1.6):
        cv.line(
            (x + np.sign(dx) * unit, ground - 6.8 * unit),
            (x + dx * unit, ground - 4.2 * unit),
            0.5 * unit,
            cloth,
            c.PERSON,
        )
    cv.ellipse(x, ground - 7.6 * unit, 0.6 * unit, 0.7 * unit, skin, c.PERSON)


def _car(cv: _Scene, x: float, ground: float, size: float) -> None:
    """A body, a cabin with windows, and two wheels, all car."""
    rng = cv.rng
    length = size * rng.uniform(2.0, 2.6)
    paint = _jitter(
        rng, rng.choice([(180, 30, 30), (30, 40, 120), (200, 200, 205), (40, 40, 40), (200, 170, 60)]), 25
    )
    x0, x1 = x - length / 2, x + length / 2
    cv.rect(x0, ground - 0.55 * size, x1, ground - 0.12 * size, paint, c.CAR, texture=0.04, shade=0.3)
    cabin = [
        (x0 + 0.2 * length, ground - 0.55 * size),
        (x0 + 0.32 * length, ground - size),
        (x1 - 0.28 * length, ground - size),
        (x1 - 0.12 * length, ground - 0.55 * size),
    ]
    cv.polygon(cabin, paint, c.CAR, texture=0.04)
    glass = [(cx, cy + 0.08 * size * (1 if cy < ground - 0.6 * size else 0)) for cx, cy in cabin]
    cv.polygon(glass, (60, 75, 95), c.CAR, texture=0.05)
    for wx in (x0 + 0.2 * length, x1 - 0.2 * length):
        cv.ellipse(wx, ground - 0.14 * size, 0.15 * length, 0.16 * size, (20, 20, 20), c.CAR)


def _bus(cv: _Scene, x: float, ground: float, h: float) -> None:
    """A long box with a row of windows and wheels, all bus."""
    rng = cv.rng
    tall, length = rng.uniform(0.16, 0.22) * h, rng.uniform(0.25, 0.35) * cv.width
    paint = _jitter(rng, rng.choice([(200, 180, 40), (40, 110, 170), (170, 40, 40)]), 20)
    cv.rect(x, ground - tall, x + length, ground - 0.08 * tall, paint, c.BUS, texture=0.04, shade=0.25)
    for wx in np.arange(x + 0.03 * length, x + length - 0.1 * length, 0.1 * length):
        cv.rect(
            wx,
            ground - 0.9 * tall,
            wx + 0.08 * length,
            ground - 0.55 * tall,
            (55, 70, 90),
            c.BUS,
            texture=0.05,
        )
    for wx in (x + 0.15 * length, x + 0.85 * length):
        cv.ellipse(wx, ground - 0.08 * tall, 0.05 * length, 0.1 * tall, (20, 20, 20), c.BUS)
