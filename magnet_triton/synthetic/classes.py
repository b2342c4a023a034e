"""The Cityscapes train ids a synthetic scene paints (the 19 evaluation classes, 255 = ignore)."""

from __future__ import annotations

ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, TRAFFIC_LIGHT, TRAFFIC_SIGN = 0, 1, 2, 3, 4, 5, 6, 7
VEGETATION, TERRAIN, SKY, PERSON, RIDER, CAR, TRUCK, BUS = 8, 9, 10, 11, 12, 13, 14, 15
TRAIN, MOTORCYCLE, BICYCLE = 16, 17, 18
IGNORE = 255
NUM_CLASSES = 19

#: The classes every scene draws at least once (rider, truck, train and motorcycle are never drawn).
DRAWN = (
    ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, TRAFFIC_LIGHT, TRAFFIC_SIGN,
    VEGETATION, TERRAIN, SKY, PERSON, CAR, BUS, BICYCLE,
)  # fmt: skip
#: Structures a few full-resolution pixels wide: a 256 x 128 view of a 2048 x 1024 scene cannot hold them.
THIN = (FENCE, POLE, TRAFFIC_LIGHT, TRAFFIC_SIGN, BICYCLE)
