"""Read and validate ``params.yaml``, one dataclass per section.

Every stage reads its settings through this module, so a wrong value stops the
stage at once with a message naming the key, e.g.::

    params.yaml data.test_fraction: must be in (0, 1) (got 1.5)

New sections follow the pattern of :class:`DataParams`: a frozen dataclass with a
``from_params(params)`` classmethod that reads its section through
:class:`Section`, whose checkers build those messages.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gestural.core.strict_yaml import DuplicateKeyError, safe_load_unique

PARAMS_FILE = "params.yaml"
_MISSING = object()
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")

# Every top-level key of params.yaml: the seed's knobs, then the sections. A key not
# listed here is a typo (`num_gesturez: 40` would otherwise be ignored silently);
# extend this set when adding a knob or a section.
KNOWN_TOP_LEVEL = frozenset({
    "segment_len", "win_size", "num_gestures", "sparse", "batch_size", "model", "loss",
    "epochs", "seed", "device",
    "train", "evaluate", "plot", "data", "synthetic",
})


# A name that becomes a path component (a speaker's emadata/cin_us_<name> directory): no '/',
# no '..', no leading '-', nothing a shell or an archive reader treats specially.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
SAFE_NAME_RULE = "of letters, digits, '_' and '-'"

# Device names params.yaml accepts (whether the device exists is gestural.devices' check).
DEVICE_NAME = re.compile(r"auto|cpu|cuda(:[0-9]+)?")
DEVICE_CHOICES = "auto, cpu, cuda or cuda:<index>"


def is_device_name(name) -> bool:
    """Whether ``name`` is spelled like a device params.yaml accepts (not whether it exists)."""
    return isinstance(name, str) and DEVICE_NAME.fullmatch(name) is not None


class ParamsError(ValueError):
    """params.yaml is missing, is not valid YAML, or holds an invalid value."""


def _did_you_mean(key: str, known) -> str:
    close = difflib.get_close_matches(str(key), sorted(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_top_level(params: dict, known=KNOWN_TOP_LEVEL) -> None:
    """Refuse a top-level key that no stage reads, naming the closest known one.

    Raises
    ------
    ParamsError
        ``params.yaml: unknown key 'num_gesturez' (did you mean 'num_gestures'?)``
    """
    for key in params:
        if key not in known:
            raise ParamsError(f"params.yaml: unknown key {str(key)!r}{_did_you_mean(key, known)}")


def load_params(path: str | os.PathLike = PARAMS_FILE) -> dict:
    """Read the parameter file.

    Parameters
    ----------
    path : path-like, default "params.yaml"
        Relative paths are taken from the current directory (the project root
        when run by DVC).

    Returns
    -------
    params : dict
        The whole file; sections are validated by the ``*Params`` classes.

    Raises
    ------
    ParamsError
        The file is missing, is not valid YAML, has a duplicate key, is not a
        mapping, or has an unknown top-level key (see :data:`KNOWN_TOP_LEVEL`).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParamsError(
            f"{path}: no such file (looked in {Path.cwd()}); run the stages from the project root"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ParamsError(f"{path}: could not be read ({error})") from None
    try:
        params = safe_load_unique(text)
    except DuplicateKeyError as error:
        raise ParamsError(f"{path} {error.key}: duplicate key (lines {error.first_line} and {error.line}); "
                          "keep one, YAML would silently take the last") from None
    except yaml.YAMLError as error:
        # Marked errors carry "line N, column M"; keep YAML's own explanation.
        raise ParamsError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping of sections (data:, ...), got {type(params).__name__}")
    check_top_level(params)
    return params


class Section:
    """Typed access to one section of params.yaml, with uniform error messages.

    Parameters
    ----------
    params : dict
        The whole parameter file (as returned by :func:`load_params`).
    name : str
        The section, e.g. ``"data"``. :meth:`top_level` reads the top-level keys instead.
    """

    def __init__(self, params: dict, name: str):
        if not isinstance(params, dict):
            raise ParamsError(f"params.yaml: expected a mapping of sections, got {type(params).__name__}")
        values = params.get(name, _MISSING)
        if values is _MISSING:
            raise ParamsError(f"params.yaml: no '{name}:' section")
        if not isinstance(values, dict):
            raise ParamsError(f"params.yaml {name}: must be a mapping of keys (got {values!r})")
        self.name = name
        self.values = values
        self._read: set[str] = set()

    @classmethod
    def top_level(cls, params: dict) -> Section:
        """The top-level keys (``seed``, ``num_gestures``, ...) read like a section; messages
        name the bare key, e.g. ``params.yaml seed: must be an integer >= 0 (got -1)``.

        Unknown top-level keys are :func:`check_top_level`'s to refuse, not :meth:`check_unknown`'s.
        """
        if not isinstance(params, dict):
            raise ParamsError(f"params.yaml: expected a mapping of sections, got {type(params).__name__}")
        return cls({"": params}, "")

    def _where(self, key: str) -> str:
        """``<section>.<key>``, or the bare key for the top level."""
        return f"{self.name}.{key}" if self.name else key

    def error(self, key: str, problem: str, value: Any = _MISSING) -> ParamsError:
        """A ParamsError for ``<section>.<key>``, quoting the value found."""
        if value is _MISSING:
            value = self.values.get(key)
        return ParamsError(f"params.yaml {self._where(key)}: {problem} (got {value!r})")

    def get(self, key: str) -> Any:
        """The raw value of ``key``; a missing key is an error."""
        self._read.add(key)
        if key not in self.values:
            raise ParamsError(f"params.yaml {self._where(key)}: missing")
        return self.values[key]

    def integer(self, key: str, *, minimum: int | None = None) -> int:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, "must be an integer")
        if minimum is not None and value < minimum:
            raise self.error(key, f"must be >= {minimum}")
        return value

    def number(self, key: str, *, low: float, high: float, open_low=False, open_high=False) -> float:
        """A float in the interval [low, high]; ``open_*`` exclude the ends."""
        value = self.get(key)
        return self.check_number(key, value, low, high, open_low, open_high)

    def check_number(self, key, value, low, high, open_low=False, open_high=False) -> float:
        """``value`` (read from ``key``) as a float in the interval; NaN and infinities are refused
        whatever the bounds (``high=math.inf`` means no maximum, not that ``.inf`` is welcome)."""
        if high == math.inf:
            interval = f"{'>' if open_low else '>='} {low:g}"
        else:
            interval = f"in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(key, f"must be a number {interval}", value)
        if not math.isfinite(value):
            raise self.error(key, f"must be a finite number {interval}", value)
        inside = (low < value if open_low else low <= value) and (
            value < high if open_high else value <= high
        )
        if not inside:
            raise self.error(key, f"must be {interval}", value)
        return float(value)

    def bounded_integer(self, key: str, low: int, high: int | None = None) -> int:
        """An int in [low, high] (``high`` None: no maximum), with one message for a wrong type
        and a wrong value: ``must be an integer >= 1 and <= 4096``.

        Stricter than :meth:`integer`: the type must be ``int`` itself (YAML's ``true`` is no
        count, nor is ``1.5``), and a maximum catches typos such as ``num_gestures: 100000``.
        """
        value = self.get(key)
        if type(value) is not int or value < low or (high is not None and value > high):
            raise self.error(key, f"must be an integer >= {low}" + (f" and <= {high}" if high is not None else ""))
        return value

    def finite_number(self, key: str, low: float, high: float = math.inf, *, open_low: bool = False) -> float:
        """A finite int or float (not a bool) with ``low <= value <= high``; ``open_low``
        excludes ``low``: ``must be a finite number > 0`` (``.inf`` is no learning rate)."""
        value = self.get(key)
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
              and (value > low if open_low else value >= low) and value <= high)
        if not ok:
            bound = f"> {low}" if open_low else f">= {low}"
            raise self.error(key, f"must be a finite number {bound}" + (f" and <= {high}" if high != math.inf else ""))
        return float(value)

    def boolean(self, key: str) -> bool:
        value = self.get(key)
        if not isinstance(value, bool):
            raise self.error(key, "must be true or false")
        return value

    def choice(self, key: str, choices: Iterable[str], *, separator: str = " | ") -> str:
        """One of ``choices``; the message lists them joined by ``separator``."""
        value = self.get(key)
        choices = tuple(choices)
        if value not in choices:
            raise self.error(key, f"must be one of {separator.join(choices)}")
        return value

    def device(self, key: str) -> str:
        """A torch device name params.yaml accepts (``auto``, ``cpu``, ``cuda``, ``cuda:<index>``);
        whether that device exists is :func:`gestural.core.devices.resolve_device`'s check."""
        value = self.get(key)
        if not is_device_name(value):
            raise self.error(key, f"must be {DEVICE_CHOICES}")
        return value

    def names(self, key: str, what: str = "names", *, value: Any = _MISSING, alternative: str = "") -> tuple[str, ...]:
        """A non-empty list of distinct :data:`SAFE_NAME` s: ``value`` if given (the key's, unpacked
        by the caller), else the key's. A lone string is refused: iterated, ``fsyn0`` would be five
        names of one letter. ``alternative`` names what else the caller accepts (``'all' or ``)."""
        value = self.get(key) if value is _MISSING else value
        ok = (isinstance(value, list) and value and len(set(map(str, value))) == len(value)
              and all(isinstance(name, str) and SAFE_NAME.fullmatch(name) for name in value))
        if not ok:
            hint = f"; for one, write [{value}]" if isinstance(value, str) and SAFE_NAME.fullmatch(value) else ""
            raise self.error(key, f"must be {alternative}a list of distinct {what} {SAFE_NAME_RULE}{hint}")
        return tuple(value)

    def optional_text(self, key: str) -> str | None:
        value = self.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, "must be a non-empty string or null")
        return value.strip()

    def check_unknown(self) -> None:
        """Refuse keys no reader asked for (usually typos)."""
        unknown = sorted(set(self.values) - self._read, key=str)
        if unknown:
            hint = _did_you_mean(unknown[0], self._read) if len(unknown) == 1 else ""
            raise ParamsError(
                f"params.yaml {self.name}: unknown key(s) {unknown}{hint}; known: {sorted(self._read)}"
            )


SOURCES = ("synthetic", "url", "archive")
MIB = 1 << 20


@dataclass(frozen=True)
class ExtractLimits:
    """The ``data.extract:`` caps on what the archive may unpack to (checked before writing).

    The defaults fit the CMU corpus with a wide margin: ~4409 utterances x (ema, wav,
    lab) for 8 speakers is ~15k members and ~2-3 GB, the largest file a few hundred KB.
    """

    max_members: int = 100_000
    max_total_mib: int = 10_000
    max_member_mib: int = 64

    @property
    def max_total_bytes(self) -> int:
        return self.max_total_mib * MIB

    @property
    def max_member_bytes(self) -> int:
        return self.max_member_mib * MIB

    @classmethod
    def from_params(cls, params: dict) -> ExtractLimits:
        """Validate ``data.extract`` of the whole parameter mapping ``params``."""
        data = Section(params, "data")
        values = data.get("extract")
        if not isinstance(values, dict):
            raise data.error("extract", "must be a mapping of max_members, max_total_mib, max_member_mib")
        section = Section({"data.extract": values}, "data.extract")
        limits = cls(
            max_members=section.integer("max_members", minimum=1),
            max_total_mib=section.integer("max_total_mib", minimum=1),
            max_member_mib=section.integer("max_member_mib", minimum=1),
        )
        section.check_unknown()
        return limits
NAN_POLICIES = ("interpolate", "drop", "error")


@dataclass(frozen=True)
class DataParams:
    """The ``data:`` section of params.yaml (see the comments there).

    Attributes
    ----------
    speakers : tuple of str or None
        None means every speaker found in the corpus.
    percentiles : (float, float)
        Low and high percentile, 0 <= low < high <= 100.
    """

    source: str
    url: str | None
    sha256: str | None
    archive: str | None
    speakers: tuple[str, ...] | None
    test_fraction: float
    seed: int
    nan_policy: str
    max_nan_run: int
    skip_bad_files: bool
    percentiles: tuple[float, float]
    extract: ExtractLimits = ExtractLimits()

    @classmethod
    def from_params(cls, params: dict) -> DataParams:
        """Validate the ``data:`` section of the whole parameter mapping ``params``.

        Raises
        ------
        ParamsError
            Naming the first invalid key, e.g.
            ``params.yaml data.test_fraction: must be in (0, 1) (got 1.5)``.
        """
        section = Section(params, "data")
        source = section.choice("source", SOURCES)

        url = section.optional_text("url")
        if source == "url":
            if url is None:
                raise section.error("url", "must be set when data.source is url")
            if not url.startswith(("http://", "https://", "file://")):
                raise section.error("url", "must start with http://, https:// or file://")

        sha256 = section.optional_text("sha256")
        if sha256 is not None and not _SHA256.match(sha256):
            raise section.error("sha256", "must be 64 hex digits or null")

        archive = section.optional_text("archive")
        if source == "archive" and archive is None:
            raise section.error("archive", "must be the path of emadata.tgz when data.source is archive")

        speakers = cls._speakers(section)
        test_fraction = section.number("test_fraction", low=0, high=1, open_low=True, open_high=True)
        seed = section.integer("seed", minimum=0)
        nan_policy = section.choice("nan_policy", NAN_POLICIES)
        max_nan_run = section.integer("max_nan_run", minimum=0)
        skip_bad_files = section.boolean("skip_bad_files")

        percentiles = section.get("percentiles")
        if not isinstance(percentiles, (list, tuple)) or len(percentiles) != 2:
            raise section.error("percentiles", "must be a list [low, high] of two percentiles")
        low = section.check_number("percentiles", percentiles[0], 0, 100)
        high = section.check_number("percentiles", percentiles[1], 0, 100)
        if not low < high:
            raise section.error("percentiles", "low must be below high")

        extract = ExtractLimits.from_params(params)
        section.get("extract")  # read above; mark it known
        section.check_unknown()
        return cls(
            source=source,
            url=url,
            sha256=sha256.lower() if sha256 else None,
            archive=archive,
            speakers=speakers,
            test_fraction=test_fraction,
            seed=seed,
            nan_policy=nan_policy,
            max_nan_run=max_nan_run,
            skip_bad_files=skip_bad_files,
            percentiles=(low, high),
            extract=extract,
        )

    @staticmethod
    def _speakers(section: Section) -> tuple[str, ...] | None:
        value = section.get("speakers")
        if value == "all":
            return None
        if isinstance(value, str):  # a single name, e.g. from `dvc exp run -S data.speakers=mngu0`
            value = [value]
        return section.names("speakers", "speaker names", value=value, alternative="'all' or ")
