"""Prometheus' text format (0.0.4) for domainjobs' own metric families, fast enough for a
scrape of hundreds of tasks, and the sum of every process's samples in multi-process mode.

prometheus-client's encoder validates and escapes every label of every sample at every
scrape (about 9 us a sample); a page for 200 tasks has some 6000 samples. Here a series'
label text is made once and reused by later scrapes, and the ``_created`` samples of our
families are left out (Prometheus' text format has no use for them: they would become
series of their own). Families that are not ours (the process and GC collectors, an app's
own metrics) go through prometheus-client's encoder unchanged.

In multi-process mode prometheus-client's ``MultiProcessCollector`` parses every sample key
(a JSON text) of every file at every scrape; :class:`MultiProcessSamples` keeps what it
parsed between scrapes and sums counters and histogram buckets straight into lines.
"""

from __future__ import annotations

import glob
import json
import math
import os
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector

#: The name prefix of the families encoded here.
PREFIX = "domainjobs_"

LabelItems = tuple[tuple[str, str], ...]


def number(value: float) -> str:
    """A sample value as Prometheus writes it."""
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value)}.0"
    return repr(float(value))


def _escape(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


class _Others:
    """Families for prometheus-client's own encoder."""

    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> Iterator[Any]:
        yield from self.families


class TextEncoder:
    """Encodes metric families as Prometheus text, remembering each series' label text."""

    def __init__(self) -> None:
        self._labels: dict[LabelItems, str] = {}

    def label_text(self, items: LabelItems) -> str:
        """``{a="1",b="2"}`` (sorted by name) for ``items``, made once per series."""
        text = self._labels.get(items)
        if text is None:
            if items:
                inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(items))
                text = "{" + inner + "}"
            else:
                text = ""
            self._labels[items] = text
        return text

    def encode(self, families: Iterable[Any]) -> str:
        """Every family: ours here, the others by prometheus-client."""
        out: list[str] = []
        others = []
        for family in families:
            if not family.name.startswith(PREFIX) or family.type not in (
                "counter",
                "gauge",
                "histogram",
            ):
                others.append(family)
                continue
            name = family.name + "_total" if family.type == "counter" else family.name
            out.append(f"# HELP {name} {_help(family.documentation)}\n")
            out.append(f"# TYPE {name} {family.type}\n")
            created = family.name + "_created"
            label_text = self.label_text
            for sample in family.samples:
                if sample.name == created:
                    continue
                labels = label_text(tuple(sample.labels.items()))
                out.append(f"{sample.name}{labels} {number(sample.value)}\n")
        text = "".join(out)
        if others:
            text += generate_latest(_Others(others)).decode("utf-8")
        return text


class MultiProcessSamples:
    """The sum of every process's samples in ``folder`` (prometheus-client's multi-process
    files), encoded as text; parsed keys and label texts are kept between scrapes."""

    def __init__(self, folder: str, encoder: TextEncoder | None = None) -> None:
        self.folder = folder
        self.encoder = encoder or TextEncoder()
        # key -> (family, sample name, labels without le, le or None, help)
        self._keys: dict[str, tuple[str, str, LabelItems, float | None, str]] = {}

    def _parse(self, key: str) -> tuple[str, str, LabelItems, float | None, str]:
        parsed = self._keys.get(key)
        if parsed is None:
            family, sample, labels, help_text = json.loads(key)
            le = labels.pop("le", None)
            items = tuple(sorted(labels.items()))
            parsed = (family, sample, items, None if le is None else float(le), help_text)
            self._keys[key] = parsed
        return parsed

    def encode(self) -> str:
        """The text of every family in the folder."""
        files = glob.glob(os.path.join(self.folder, "*.db"))
        ours = [f for f in files if os.path.basename(f).startswith(("counter_", "histogram_"))]
        others = [f for f in files if f not in ours]
        # family -> (type, help, {labels: {sample name or bucket bound: sum}})
        families: dict[str, tuple[str, str, dict[LabelItems, dict[Any, float]]]] = {}
        for path in ours:
            kind = os.path.basename(path).split("_", 1)[0]
            try:
                values = MmapedDict.read_all_values_from_file(path)  # type: ignore[no-untyped-call]
            except FileNotFoundError:  # pragma: no cover - a folder being cleaned
                continue
            for key, value, _timestamp, _pos in values:
                family, sample, items, le, help_text = self._parse(key)
                entry = families.get(family)
                if entry is None:
                    entry = families[family] = (kind, help_text, {})
                series = entry[2].setdefault(items, {})
                slot: Any = le if le is not None else sample
                series[slot] = series.get(slot, 0.0) + value
        out: list[str] = []
        label_text = self.encoder.label_text
        for family, (kind, help_text, all_series) in sorted(families.items()):
            name = family + "_total" if kind == "counter" else family
            out.append(f"# HELP {name} {_help(help_text)}\n# TYPE {name} {kind}\n")
            for items, series in all_series.items():
                labels = label_text(items)
                if kind == "counter":
                    for sample, total in series.items():
                        if not sample.endswith("_created"):
                            out.append(f"{sample}{labels} {number(total)}\n")
                    continue
                inner = labels[1:-1] + "," if labels else ""
                cumulative = 0.0
                for bound in sorted(k for k in series if not isinstance(k, str)):
                    cumulative += series[bound]
                    bound_text = "+Inf" if bound == math.inf else number(bound)
                    out.append(
                        f'{family}_bucket{{{inner}le="{bound_text}"}} {number(cumulative)}\n'
                    )
                out.append(f"{family}_count{labels} {number(cumulative)}\n")
                out.append(f"{family}_sum{labels} {number(series.get(family + '_sum', 0.0))}\n")
        text = "".join(out)
        if others:
            merged = MultiProcessCollector.merge(others, accumulate=True)  # type: ignore[no-untyped-call]
            text += generate_latest(_Others(list(merged))).decode("utf-8")
        return text
