"""Load a site's own data (CSV, Parquet or an OMOP CDM database) into a validated contract table.

`load_site_frame` is the one door through which patient rows enter the site's client: read the source,
apply the site's mapping (client.data.mapping), validate every row against the contract (shared.contract), and
return only contract columns. It reads and never writes, so a failed load leaves nothing half-done.

The returned frame has exactly CONTRACT_COLUMNS, in that order, with dtypes fixed at every site:
numbers and true/false flags are float64 (flags as 1.0/0.0, NaN = missing); codes and patient_id are
object columns of str (None = missing). See client.data.mapping for why.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from client.data.mapping import map_site_table
from shared.contract import DataContractError, Violation, validate_frame, with_every_endpoint
from shared.site_config import ColumnMapping, CsvSource, OmopSource, ParquetSource, SiteConfig

# A valid UTF-8 multi-byte sequence; finding one in a file that is not valid UTF-8 means mixed encodings.
_UTF8_MULTIBYTE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")


def load_site_frame(config: SiteConfig) -> pd.DataFrame:
    """The site's patients as a validated contract frame; DataContractError lists every violation."""
    mapping = config.mapping or ColumnMapping()
    source = config.data
    if isinstance(source, CsvSource):
        label = str(source.path)
        raw = read_csv_cells(source.path, encoding=source.encoding, delimiter=source.delimiter)
    elif isinstance(source, ParquetSource):
        label = str(source.path)
        raw = read_parquet_cells(source.path)
    elif isinstance(source, OmopSource):
        label = source.describe()
        from client.data.omop import read_omop  # on use: SQLAlchemy and DuckDB load only for an OMOP site

        raw = read_omop(source.url, source.cdm_schema, mapping=mapping, label=label)
    else:  # pragma: no cover - the config's discriminated union admits nothing else
        raise TypeError(f"unsupported data source {source!r}")
    try:
        frame = validated_contract_frame(raw, mapping, label, config.modalities_absent)
    except DataContractError as error:
        if isinstance(source, OmopSource):
            raise _by_person_id(error, raw.index) from None
        raise
    return frame.reset_index(drop=True)


def load_contract_csv(path: str | Path) -> pd.DataFrame:
    """A CSV already in contract columns (e.g. a synthetic site's patients.csv), validated, same dtypes."""
    path = Path(path)
    return validated_contract_frame(read_csv_cells(path), ColumnMapping(), str(path)).reset_index(drop=True)


def validated_contract_frame(raw: pd.DataFrame, mapping: ColumnMapping, source: str,
                             modalities_absent: Iterable[str] = ()) -> pd.DataFrame:
    """Map, then check every row against the contract; one DataContractError lists all problems found.

    A contract complaint that only follows from a cell the mapping already rejected is left out, and
    complaints name the site's own column where the mapping renamed it.
    """
    mapped = map_site_table(raw, mapping, source, modalities_absent)
    if mapped.frame is None:
        raise DataContractError(mapped.violations)
    violations = list(mapped.violations)
    try:
        validate_frame(mapped.frame, source)
    except DataContractError as error:
        for violation in error.violations:
            columns = (violation.column or "").split("/")
            if any((violation.row, column) in mapped.failed_cells for column in columns):
                continue
            if violation.column:
                site_names = "/".join(mapped.site_column_for.get(c, c) for c in columns)
                violation = violation.model_copy(update={"column": site_names})
            violations.append(violation)
    if violations:
        raise DataContractError(sorted(violations, key=lambda v: v.row or 0))
    return with_every_endpoint(mapped.frame)


def read_csv_cells(path: str | Path, encoding: str = "auto", delimiter: str = ",") -> pd.DataFrame:
    """Every cell of a delimited file as text, after working out (or checking) its encoding."""
    path = Path(path)
    data = _read_bytes(path)
    text = decode_text(data, str(path), encoding)
    header = next(csv.reader(io.StringIO(text), delimiter=delimiter), [])
    duplicated = [name for name, count in Counter(h.strip() for h in header).items() if count > 1]
    if duplicated:
        raise DataContractError([Violation(source=str(path), row=None, column=name,
                                           rule="the header names this column more than once")
                                 for name in duplicated])
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, sep=delimiter)
    except pd.errors.ParserError as error:
        line = re.search(r"line (\d+)", str(error))
        row = int(line.group(1)) - 1 if line else None
        raise DataContractError([Violation(source=str(path), row=row, column=None,
                                           rule=f"malformed CSV: {error}".strip())]) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.empty:
        raise DataContractError([Violation(source=str(path), row=None, column=None,
                                           rule="the file has a header but no patient rows")])
    return frame


def read_parquet_cells(path: str | Path) -> pd.DataFrame:
    """A Parquet file as a frame of its stored values; a truncated or corrupt file is a clear error."""
    path = Path(path)
    _read_bytes(path)  # not found / empty, with the same messages as CSV
    try:
        frame = pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError) as error:
        raise DataContractError([Violation(source=str(path), row=None, column=None,
                                           rule=f"cannot read the Parquet file; it is truncated, corrupt or not "
                                                f"Parquet ({error}). Export it again")]) from None
    if frame.empty:
        raise DataContractError([Violation(source=str(path), row=None, column=None,
                                           rule="the file has columns but no patient rows")])
    return frame.reset_index(drop=True)


def decode_text(data: bytes, source: str, encoding: str = "auto") -> str:
    """Bytes to text: UTF-8 (BOM or not), else Latin-1; a file mixing encodings is refused, not guessed."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in data[:4096]:
        raise DataContractError([Violation(source=source, row=None, column=None,
                                           rule="the file looks like UTF-16 (or binary); save it as UTF-8 CSV")])
    if encoding != "auto":
        try:
            return data.decode(encoding)
        except UnicodeDecodeError as error:
            line = data.count(b"\n", 0, error.start) + 1
            raise DataContractError([_encoding_violation(
                source, line, f"line {line} is not valid {encoding} (byte 0x{data[error.start]:02x}); "
                              f"fix the configured encoding or re-export the file")]) from None
    if data.startswith(codecs.BOM_UTF8):
        encoding_name = "utf-8-sig"
    else:
        encoding_name = "utf-8"
    try:
        return data.decode(encoding_name)
    except UnicodeDecodeError as error:
        utf8_sequence = _UTF8_MULTIBYTE.search(data)
        if utf8_sequence is None and encoding_name == "utf-8":
            return data.decode("latin-1")
        bad_line = data.count(b"\n", 0, error.start) + 1
        rule = f"the file mixes text encodings: line {bad_line} is not UTF-8 (byte 0x{data[error.start]:02x})"
        if utf8_sequence is not None:
            utf8_line = data.count(b"\n", 0, utf8_sequence.start()) + 1
            rule += f" while line {utf8_line} is UTF-8"
        raise DataContractError([_encoding_violation(source, bad_line,
                                                     rule + "; re-export the whole file as UTF-8")]) from None


def _encoding_violation(source: str, line: int, rule: str) -> Violation:
    return Violation(source=source, row=line - 1 if line > 1 else None, column=None, rule=rule)


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataContractError([Violation(source=str(path), row=None, column=None,
                                           rule="file not found")]) from None
    except IsADirectoryError:
        raise DataContractError([Violation(source=str(path), row=None, column=None,
                                           rule="this is a folder, not a data file")]) from None
    if not data.strip():
        raise DataContractError([Violation(source=str(path), row=None, column=None, rule="the file is empty")])
    return data


def _by_person_id(error: DataContractError, person_ids: pd.Index) -> DataContractError:
    """Row numbers of an OMOP frame mean nothing to a steward; name the person_id instead."""
    located = []
    for violation in error.violations:
        if violation.row is not None and 0 < violation.row <= len(person_ids):
            person_id = person_ids[violation.row - 1]
            violation = violation.model_copy(update={"source": f"{violation.source}, person_id {person_id}",
                                                     "row": None})
        located.append(violation)
    return DataContractError(located)
