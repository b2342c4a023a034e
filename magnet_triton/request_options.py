"""The per-request options of the pipeline: one row each, and everything that names them derives from here.

A request may change a few settings of the served preset: as optional input tensors of ``magnet`` and
``magnet_pipeline`` (``MODE``, ...), or as request parameters spelled in lower case (``mode``, ...). The
same names are the keyword arguments of both clients' ``segment``, the ``--mode``-style flags of
``magnet-client`` and ``magnet-triton``, and fields of :class:`~magnet_triton.settings.Settings`.
:mod:`magnet_triton.io_spec`, the pipeline's parser, both clients and both command lines read
:data:`REQUEST_OPTIONS`, so adding an option is one row here (plus its tests).

Pure logic, numpy only: the client installs without torch.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from magnet_triton.errors import MagnetError
from magnet_triton.settings import MODES, PATCH_ORDERS, Settings

#: Upper bound on ``n_points`` as a count: more than any served image has pixels is a mistake.
MAX_N_POINTS = 1 << 31
#: Upper bound on ``n_patches``: no preset has more than a few hundred patches per scale.
MAX_N_PATCHES = 1 << 16


@dataclass(frozen=True)
class RequestOption:
    """One setting a request may override.

    Attributes:
        name: the :class:`Settings` field, the request parameter and the client keyword (``n_points``).
        dtype: Triton dtype of the optional input tensor: ``BYTES`` (text), ``FP32`` or ``INT32``.
        help: one line: what the values mean.
        choices: the allowed words of a text option.
        minimum, maximum: the allowed range of a number, both ends included unless ``open_minimum``.
        open_minimum: the minimum itself is not allowed (``n_points > 0``).
        whole: the number must be a whole number.
        range_text: how messages describe the allowed values.
    """

    name: str
    dtype: str
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    open_minimum: bool = False
    whole: bool = False
    range_text: str = ""

    @property
    def tensor(self) -> str:
        """The optional input tensor's name (``N_POINTS``)."""
        return self.name.upper()

    @property
    def parameter(self) -> str:
        """The request parameter's name (``n_points``)."""
        return self.name

    @property
    def flag(self) -> str:
        """The command-line flag (``--n-points``)."""
        return "--" + self.name.replace("_", "-")

    @property
    def default(self) -> None:
        """Every option defaults to the served preset's value: None means "keep it"."""
        return None

    def parse(self, value: Any) -> str | float | int:
        """The checked value of a tensor element, parameter or keyword argument.

        Raises:
            MagnetError: the value has the wrong type or is out of range; the message says what is allowed.
        """
        value = _scalar(self.tensor, value)
        if self.dtype == "BYTES":
            if value not in self.choices:
                raise MagnetError(f"unknown {self.name} {value!r}; choose one of {list(self.choices)}")
            return value
        if isinstance(value, (str, bool)) or not isinstance(value, (int, float)):
            kind = "a whole number" if self.whole else "a number"
            raise MagnetError(f"{self.name} must be {kind}, got {value!r}")
        if self.whole:
            if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
                raise MagnetError(f"{self.name} must be a whole number, got {value}")
            value = int(value)
        else:
            value = float(value)
        if not self._in_range(value):
            raise MagnetError(f"{self.name} must be {self.range_text}, got {value}")
        return value

    def _in_range(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.minimum is not None and (
            value < self.minimum or (self.open_minimum and value == self.minimum)
        ):
            return False
        return self.maximum is None or value <= self.maximum

    def encode(self, value: str | float | int) -> np.ndarray:
        """A checked value as the 1-element array of its optional input tensor."""
        if self.dtype == "BYTES":
            return np.array([str(value).encode()], dtype=np.object_)
        return np.array([value], dtype=np.float32 if self.dtype == "FP32" else np.int32)

    def add_argument(self, parser: argparse.ArgumentParser, *, what: str = "the preset's") -> None:
        """Add this option's flag to ``parser`` (choices and type from the row; None keeps the preset)."""
        kind = str if self.dtype == "BYTES" else (int if self.whole else float)
        parser.add_argument(
            self.flag,
            dest=self.name,
            type=kind,
            choices=self.choices or None,
            default=None,
            help=f"override {what} {self.name}: {self.help}",
        )


#: Every per-request option, in the order the optional inputs are listed in the configs.
REQUEST_OPTIONS: tuple[RequestOption, ...] = (
    RequestOption(
        "mode",
        "BYTES",
        help=" | ".join(MODES),
        choices=MODES,
    ),
    RequestOption(
        "n_points",
        "FP32",
        help="> 1 points refined per scale, else a fraction of the pixels",
        minimum=0,
        open_minimum=True,
        maximum=MAX_N_POINTS,
        range_text=f"in (0, 1] (a fraction) or a count up to {MAX_N_POINTS}",
    ),
    RequestOption(
        "n_patches",
        "INT32",
        help="patches refined per scale: -1 all, 0 none (coarse only), k > 0 the k most uncertain (MagNet-Fast)",
        minimum=-1,
        maximum=MAX_N_PATCHES,
        whole=True,
        range_text=f"-1 (every patch), 0 (coarse only) or 1..{MAX_N_PATCHES}",
    ),
    RequestOption(
        "patch_order",
        "BYTES",
        help="which patches MagNet-Fast refines first: " + " | ".join(PATCH_ORDERS),
        choices=PATCH_ORDERS,
    ),
)
# Everything below reads REQUEST_OPTIONS when called, never a copy made at import, so a row added to
# the table (or, in a test, patched in) reaches every consumer.


def option_names() -> tuple[str, ...]:
    """The options' names (``mode``, ``n_points``, ...), in table order."""
    return tuple(o.name for o in REQUEST_OPTIONS)


def request_option(name: str) -> RequestOption:
    """The row called ``name`` (field, parameter or tensor name), or a MagnetError listing the known ones."""
    for option in REQUEST_OPTIONS:
        if name in (option.name, option.tensor):
            return option
    raise MagnetError(f"unknown override {name!r}; known: {list(option_names())}")


#: Request parameters that are not ours to check: Triton's and its clients' own.
TRITON_PARAMETERS = frozenset({"sequence_id", "sequence_start", "sequence_end", "priority", "timeout"})


def check_request_parameters(parameters: Mapping[str, Any]) -> None:
    """Refuse a request parameter that is neither an option, ``deadline_ms``, ``outputs`` nor Triton's own.

    A misspelling (``n_patchs``) would otherwise be ignored and the request run with the defaults.

    Raises:
        UnknownParameter: naming it and listing the known ones.
    """
    from magnet_triton import io_spec
    from magnet_triton.errors import UnknownParameter

    known = option_names()
    ours_too = (io_spec.DEADLINE_PARAMETER, io_spec.OUTPUTS_PARAMETER)
    for name in parameters:
        ours = name in known or name in ours_too
        if not ours and name not in TRITON_PARAMETERS and not name.startswith("triton_"):
            listed = ", ".join([*known, *ours_too])
            raise UnknownParameter(f"unknown request parameter {name!r}; known: {listed}")


def parse_overrides(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Check raw override values, keyed by field, parameter or tensor name; None values are skipped.

    Returns:
        keyword arguments for :meth:`Settings.with_overrides` (field names, checked values).

    Raises:
        MagnetError: an unknown name or a bad value.
    """
    overrides: dict[str, Any] = {}
    for key, value in raw.items():
        option = request_option(str(key))
        if value is not None:
            overrides[option.name] = option.parse(value)
    return overrides


def apply_overrides(settings: Settings, raw: Mapping[str, Any]) -> Settings:
    """``settings`` with a request's overrides, or a :class:`MagnetError` saying what is wrong."""
    return settings.with_overrides(**parse_overrides(raw))


def add_option_arguments(parser: argparse.ArgumentParser, *, what: str = "the preset's") -> None:
    """Every option's flag on ``parser`` (``--mode``, ``--n-points``, ...)."""
    for option in REQUEST_OPTIONS:
        option.add_argument(parser, what=what)


def options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The options given on a command line made with :func:`add_option_arguments` (None when not given)."""
    return {o.name: getattr(args, o.name) for o in REQUEST_OPTIONS}


def _scalar(name: str, value: Any) -> Any:
    """The single element of a 1-element input (or a plain parameter value), bytes decoded as UTF-8."""
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise MagnetError(f"{name} must hold exactly one value, got shape {tuple(value.shape)}")
        value = value.reshape(-1)[0]
    if isinstance(value, (bytes, np.bytes_)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise MagnetError(f"{name} is not UTF-8 text") from None
    if isinstance(value, np.generic):
        value = value.item()
    return value
