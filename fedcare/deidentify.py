"""De-identification guard: refuse data that still carries HIPAA Safe Harbor identifiers.

The data gate is an allow-list (only the task's declared columns are read); this guard is the
second line, for the columns a site asks the gate to ignore and for the reason given when an
undeclared column is refused. It checks column names (normalised: camelCase, case, spaces,
dashes; a trailing number is allowed, so ``zip3`` and ``phone2`` count) and values.

Value rules come in two strengths. A *strong* rule (SSN, e-mail, phone, record-number-like
code, full date) refuses a column on a single matching value, found anywhere in the value (so
an SSN inside a note counts): one leaked SSN is a leak, and a column where "only some rows"
match is still an identifier column. A *weak* rule (5-digit ZIP, long number, person name,
street address, free-text note) could match harmless values by chance, so it needs at least
:data:`MIN_MATCH_SHARE` of the column's non-empty values. A column named as an age ("age",
"age_years", "patient_age") with one value above :data:`AGE_TOP_CODE` holds ages over 89 that
are not top-coded; its fix is to top-code them, not to remove the column. A declared column is
left to its task's ``ColumnRule.top_code``. Messages name the column, the rule and how many
values matched, never a value.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

MIN_MATCH_SHARE = 0.5  # a weak rule flags a column when at least half its non-empty values match
FREE_TEXT_MIN_WORDS = 5  # a value of this many words or more is free text, not a code or level
# HIPAA Safe Harbor: ages over 89 identify a person unless top-coded; 90 stands for "90 or older".
AGE_TOP_CODE = 90
REMOVE_FIX = "remove it from the export"
AGE_FIX = (
    f"top-code every value above {AGE_TOP_CODE - 1} to {AGE_TOP_CODE} in the export, the "
    f"category '{AGE_TOP_CODE} or above'"
)

# (column-name words, what they are). A word matches a whole token of the normalised name
# (tokens are separated by underscores), optionally followed by digits ("zip3", "phone2").
_NAME_WORDS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("name", "names", "surname", "forename", "first_name", "last_name", "given_name",
      "family_name", "middle_name", "full_name", "patient_name", "maiden_name", "initials",
      "patient"), "a person's name"),
    (("mrn", "medical_record", "medical_record_number", "record_number", "record_no", "record_id",
      "chart_number", "chart_no", "patient_id", "hospital_number", "id", "identifier", "uuid",
      "guid", "encounter", "accession"), "a record number or identifier"),
    (("ssn", "social_security", "social_security_number", "nhs_number", "national_id",
      "passport", "insurance_number", "member_id"), "a national identifier"),
    (("email", "e_mail", "email_address", "mail"), "an e-mail address"),
    (("phone", "telephone", "tel", "mobile", "cell_phone", "fax", "phone_number"),
     "a phone number"),
    (("address", "street", "addr", "city", "county", "town", "geocode", "latitude", "longitude",
      "lat", "lon"), "a street address or place"),
    (("zip", "zipcode", "zip_code", "postcode", "postal", "postal_code"), "a ZIP code"),
    (("dob", "birth", "birthday", "birthdate", "birth_date", "date_of_birth", "born", "date",
      "dates", "datetime", "timestamp"), "a date"),
    (("note", "notes", "comment", "comments", "remark", "remarks", "narrative", "free_text",
      "text", "description"), "free text"),
    (("ip", "ip_address", "url", "account", "account_number", "license", "license_number",
      "licence", "device_serial", "serial", "vehicle_id", "health_plan", "photo", "biometric",
      "fingerprint"), "an identifier"),
)  # fmt: skip
_NAME_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(r"(^|_)(" + "|".join(words) + r")\d*($|_)"), what) for words, what in _NAME_WORDS
)
_AGE_NAME = re.compile(r"(^|_)ages?\d*($|_)")  # a whole token: not "stage", "dosage"

_MONTH = (
    r"(jan(uary)?|feb(ruary)?|mar(ch)?|apr(il)?|may|june?|july?|aug(ust)?|sep(t(ember)?)?"
    r"|oct(ober)?|nov(ember)?|dec(ember)?)"
)
_START = r"(?<![\w.+-])"  # not inside a longer word, number or e-mail address
_END = r"(?![\w]|[.,]\d)"  # not followed by more of a word or a decimal part

# Strong rules: one value anywhere in the column is enough.
_STRONG_PATTERNS: dict[str, tuple[str, ...]] = {
    "social security numbers": (r"\d{3}[- ]\d{2}[- ]\d{4}",),
    "e-mail addresses": (r"[\w.+-]+@[\w-]+(\.[\w-]+)*\.[a-z]{2,}",),
    "phone numbers": (
        r"(\+?\d{1,3}[ .-]?)?(\(\d{3}\)|\d{3})[ .-]?\d{3}[ .-]\d{4}",
        r"\+?\d{10,11}",  # without separators
        r"\+\d{12,13}",
    ),
    "record-number-like codes": (r"[a-z]{1,4}[-#:]?\d{5,}", r"0\d{5,}"),  # MRN0012345, 00123456
    "ZIP codes": (r"\d{5}-\d{4}",),  # ZIP+4; a plain 5-digit number is a weak rule
    "full dates": (
        r"(19|20)\d{2}-\d{1,2}-\d{1,2}",
        r"\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}",
        r"(19|20)\d{2}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])",  # 19610303
        r"\d{1,2}(st|nd|rd|th)?[ -]" + _MONTH + r"\.?[ ,-]+\d{2,4}",  # 3 March 1961, 03-Mar-1961
        _MONTH + r"\.? \d{1,2}(st|nd|rd|th)?,? \d{2,4}",  # March 3, 1961
    ),
}
_STRONG_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(_START + "(" + "|".join(patterns) + ")" + _END, re.IGNORECASE), what)
    for what, patterns in _STRONG_PATTERNS.items()
)

_NAME_TOKEN = r"[A-Z][a-z]*(['-][A-Z]?[a-z]+)*\.?"  # Smith, O'Neil, Mary-Jane, J.
_UPPER_TOKEN = r"[A-Z]+(['-][A-Z]+)*\.?"  # SMITH, O'NEIL
# Weak rules: at least MIN_MATCH_SHARE of the non-empty values must match (the whole value).
_WEAK_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^\d{5}$"), "ZIP codes"),
    (re.compile(r"^\d{7,9}$"), "record-number-like codes"),
    (
        re.compile(r"^\d+\s+\w+.*\b(st|street|ave|avenue|rd|road|blvd|lane|ln|dr|drive)\.?$", re.I),
        "street addresses",
    ),
    (
        re.compile(
            rf"^({_NAME_TOKEN},? {_NAME_TOKEN}( {_NAME_TOKEN}){{0,2}}"
            rf"|{_UPPER_TOKEN},? {_UPPER_TOKEN}( {_UPPER_TOKEN}){{0,2}})$"
        ),
        "person names",
    ),
    (re.compile(rf"^(\S+\s+){{{FREE_TEXT_MIN_WORDS - 1},}}\S+$"), "free-text notes"),
)
# Categorical levels repeat; names and notes mostly do not. A weak text rule needs this many
# distinct matching values per matching value, so "Typical Angina" x 300 is not a name.
_DISTINCT_RULES = frozenset({"person names", "free-text notes", "street addresses"})
MIN_DISTINCT_SHARE = 0.5


@dataclass(frozen=True)
class Finding:
    """A column that looks like an identifier, and why (what, by which rule)."""

    column: str
    why: str  # e.g. "a date (by its name)", "phone numbers (by its values: 2 of 12; ...)"
    fix: str = REMOVE_FIX  # what the site does to its export


def normalise(column: str) -> str:
    """``"Date of Birth"`` -> ``"date_of_birth"``; ``"PatientName"`` -> ``"patient_name"``."""
    split = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", column.strip())
    return re.sub(r"[^a-z0-9]+", "_", split.lower()).strip("_")


def identifier_by_name(column: str) -> str | None:
    """What identifier the column's name suggests, or None."""
    name = normalise(column)
    for pattern, what in _NAME_RULES:
        if pattern.search(name):
            return what
    return None


def strong_identifier(value: str) -> str | None:
    """The strong identifier found anywhere in ``value`` (e.g. an SSN inside a note), or None."""
    for pattern, what in _STRONG_RULES:
        if pattern.search(value):
            return what
    return None


def identifier_by_values(values: Sequence[str]) -> str | None:
    """What identifier the values look like, with the rule that hit, or None."""
    present = [v.strip() for v in values if v and v.strip()]
    if not present:
        return None
    for pattern, what in _STRONG_RULES:
        matches = sum(1 for v in present if pattern.search(v))
        if matches:
            return f"{what} (by its values: {matches} of {len(present)}; one is enough)"
    for pattern, what in _WEAK_RULES:
        matching = [v for v in present if pattern.match(v)]
        if len(matching) / len(present) < MIN_MATCH_SHARE:
            continue
        if what in _DISTINCT_RULES and len(set(matching)) < MIN_DISTINCT_SHARE * len(matching):
            continue
        return f"{what} (by its values: {len(matching)} of {len(present)})"
    return None


def ages_over_top_code(column: str, values: Sequence[str]) -> str | None:
    """Why a column named as an age still identifies (values above the top code), or None."""
    if not _AGE_NAME.search(normalise(column)):
        return None
    numbers = [_number(v) for v in values if v.strip()]
    above = sum(1 for n in numbers if n is not None and n > AGE_TOP_CODE)
    if not above:
        return None
    return (
        f"ages over {AGE_TOP_CODE - 1} (by its values: {above} of {len(numbers)} above "
        f"{AGE_TOP_CODE}; HIPAA Safe Harbor identifiers)"
    )


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def find_identifiers(
    columns: Mapping[str, Sequence[str]], numeric_columns: Collection[str]
) -> list[Finding]:
    """One finding per identifier-like column (its name, then ages over 89, then its values).

    ``numeric_columns`` are declared numeric by the task; their values are not pattern-checked
    (a cholesterol of 23456 is implausible, not a ZIP code; the task's range checks catch it,
    and its top code an age over 89), their names still are.
    """
    findings: list[Finding] = []
    for column, values in columns.items():
        what = identifier_by_name(column)
        if what is not None:
            findings.append(Finding(column, f"{what} (by its name)"))
        elif column in numeric_columns:
            continue
        elif (why := ages_over_top_code(column, values)) is not None:
            findings.append(Finding(column, why, AGE_FIX))
        elif (why := identifier_by_values(values)) is not None:
            findings.append(Finding(column, why))
    return findings
