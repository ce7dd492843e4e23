"""The report kinds. Each is a module with its parameters (a serializer), its fixed column
list, a generator of rows and a cheap row count for the progress bar.

Rows are read in chunks: `.iterator(chunk_size=CHUNK_SIZE)` over `values_list` (a server-side
cursor on PostgreSQL), and whatever a row needs from other tables is looked up once per chunk
(a handful of `IN` queries), never per row, and never for the whole result. Memory therefore
depends on CHUNK_SIZE, not on the number of rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice

from ..models import ReportKind
from ..params import ReportParameters, normalize, parse_parameters

CHUNK_SIZE = 2000


def chunked(rows: Iterable, size: int) -> Iterator[list]:
    """Lists of at most `size` consecutive items of `rows`."""
    iterator = iter(rows)
    while chunk := list(islice(iterator, size)):
        yield chunk


def stream(queryset) -> Iterator[list]:
    """A queryset's rows, CHUNK_SIZE at a time, read with a chunked cursor."""
    return chunked(queryset.iterator(chunk_size=CHUNK_SIZE), CHUNK_SIZE)


@dataclass(frozen=True)
class Kind:
    name: str
    title: str
    description: str
    parameters: type[ReportParameters]
    columns: Callable[[dict], list[str]]
    rows: Callable[[dict], Iterator[Sequence]]
    count: Callable[[dict], int | None]

    def parse(self, data) -> dict:
        """Validated parameter values (Python types), or InvalidParameters."""
        return parse_parameters(self.parameters, data)

    def normalize(self, values: dict) -> dict:
        return normalize(self.parameters, values)


def _kinds() -> dict[str, Kind]:
    from . import audit, executions, hosts, rules

    kinds = {}
    for module in (rules, executions, hosts, audit):
        kinds[module.NAME] = Kind(
            name=module.NAME,
            title=ReportKind(module.NAME).label,
            description=module.DESCRIPTION,
            parameters=module.Parameters,
            columns=module.columns,
            rows=module.rows,
            count=module.count,
        )
    return kinds


KINDS: dict[str, Kind] = _kinds()


def validate_parameters(kind: str, data) -> dict:
    """`data` checked for `kind` and normalised to JSON; InvalidParameters otherwise."""
    spec = KINDS[kind]
    return spec.normalize(spec.parse(data))
