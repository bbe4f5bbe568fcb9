"""De-identification guard: refuse data that still carries HIPAA Safe Harbor identifiers.

Checked by column name (normalised: case, spaces, dashes) and by value pattern (SSNs, e-mail
addresses, phone numbers, full dates, ZIP codes, long record-number-like strings), so a renamed
identifier column is caught by what it holds. The guard reports every offending column at once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

# (column-name words, what they are): a word matches between underscores of the normalised name.
_NAME_WORDS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("first_name", "last_name", "given_name", "family_name", "middle_name", "full_name",
      "patient_name", "maiden_name"), "a person's name"),
    (("mrn", "medical_record", "medical_record_number", "record_number", "record_no", "record_id",
      "chart_number", "chart_no", "patient_id", "hospital_number"), "a medical record number"),
    (("ssn", "social_security", "social_security_number", "nhs_number", "national_id",
      "passport"), "a national identifier"),
    (("email", "e_mail", "email_address"), "an e-mail address"),
    (("phone", "telephone", "mobile", "cell_phone", "fax", "phone_number"), "a phone number"),
    (("address", "street", "addr", "city", "county", "town"), "a street address or place"),
    (("zip", "zipcode", "zip_code", "postcode", "postal_code"), "a ZIP code"),
    (("dob", "birthdate", "birth_date", "date_of_birth", "admission_date", "admit_date",
      "discharge_date", "death_date", "date_of_death", "visit_date"), "a full date"),
    (("ip_address", "url", "account_number", "license_number", "device_serial", "vehicle_id",
      "health_plan"), "an identifier"),
)  # fmt: skip
_NAME_RULES: tuple[tuple[str, str], ...] = tuple(
    (r"(^|_)(" + "|".join(words) + r")($|_)", what) for words, what in _NAME_WORDS
)

_VALUE_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^\d{3}-\d{2}-\d{4}$"), "social security numbers"),
    (re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$"), "e-mail addresses"),
    (re.compile(r"^(\+?\d{1,2}[ .-]?)?\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}$"), "phone numbers"),
    (re.compile(r"^\d{4}-\d{2}-\d{2}([ T].*)?$|^\d{1,2}/\d{1,2}/\d{2,4}$"), "full dates"),
    (re.compile(r"^\d{5}(-\d{4})?$"), "ZIP codes"),
    (re.compile(r"^[A-Za-z]{1,4}\d{5,}$"), "record-number-like codes"),
    (
        re.compile(r"^\d+\s+\w+.*\b(st|street|ave|avenue|rd|road|blvd|lane|ln|dr|drive)\.?$", re.I),
        "street addresses",
    ),
    (re.compile(r"^[A-Z][a-z]+(-[A-Z][a-z]+)?,? [A-Z][a-z]+(-[A-Z][a-z]+)?$"), "person names"),
)

MIN_MATCH_SHARE = 0.5  # a column is flagged when at least half its non-empty values match


def normalise(column: str) -> str:
    """``"Date of Birth"`` -> ``"date_of_birth"``."""
    return re.sub(r"[^a-z0-9]+", "_", column.strip().lower()).strip("_")


_EXACT_NAMES = {"name": "a person's name", "surname": "a person's name", "patient": "a patient"}


def identifier_by_name(column: str) -> str | None:
    """What identifier the column's name suggests, or None."""
    name = normalise(column)
    if name in _EXACT_NAMES:
        return _EXACT_NAMES[name]
    for pattern, what in _NAME_RULES:
        if re.search(pattern, name):
            return what
    return None


def identifier_by_values(values: Sequence[str]) -> str | None:
    """What identifier most of the column's values look like, or None."""
    present = [v.strip() for v in values if v and v.strip()]
    if not present:
        return None
    for pattern, what in _VALUE_RULES:
        matches = sum(1 for v in present if pattern.match(v))
        if matches / len(present) >= MIN_MATCH_SHARE:
            return what
    return None


def find_identifiers(columns: Mapping[str, Sequence[str]], numeric_columns: set[str]) -> list[str]:
    """One problem per identifier-like column (name first, then values).

    ``numeric_columns`` are declared numeric by the task; their values are not pattern-checked
    (a cholesterol of 23456 is implausible, not a ZIP code), their names still are.
    """
    problems: list[str] = []
    for column, values in columns.items():
        what = identifier_by_name(column)
        how = "its name"
        if what is None and column not in numeric_columns:
            what = identifier_by_values(values)
            how = "its values"
        if what is not None:
            problems.append(
                f"column '{column}' looks like {what} (by {how}): remove it from the export; "
                "fedcare only takes de-identified data"
            )
    return problems
