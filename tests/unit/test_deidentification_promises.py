"""The de-identification guard's value rules, at their edges.

A weak rule (5-digit ZIP, person name, street address, free text) flags a column when at least
half its non-empty values match, and for names, notes and addresses only when the matching
values are not a few categorical levels repeated. Blank values do not count either way.
"""

from __future__ import annotations

from fedcare.deidentify import identifier_by_values, normalise


def test_one_zip_like_value_among_three_is_not_enough_to_flag_a_column() -> None:
    # Prepare: a third of the values look like a 5-digit ZIP code
    values = ["12345", "high", "low"]

    # Execute
    why = identifier_by_values(values)

    # Assert
    assert why is None


def test_exactly_half_zip_like_values_flag_the_column() -> None:
    # Prepare: two of four values look like 5-digit ZIP codes
    values = ["12345", "54321", "high", "low"]

    # Execute
    why = identifier_by_values(values)

    # Assert
    assert why == "ZIP codes (by its values: 2 of 4)"


def test_names_that_are_half_distinct_still_count_as_person_names() -> None:
    # Prepare: four names, two distinct: exactly the distinct share the rule requires
    values = ["Ann Lee", "Ann Lee", "Bob Ray", "Bob Ray"]

    # Execute
    why = identifier_by_values(values)

    # Assert
    assert why == "person names (by its values: 4 of 4)"


def test_a_repeated_address_does_not_hide_distinct_names_in_the_same_column() -> None:
    # Prepare: half the values are one address repeated (a level, not addresses); the other
    # half are distinct person names
    values = ["1 Main St", "1 Main St", "1 Main St", "Ann Lee", "Bob Ray", "Cy Dunn"]

    # Execute
    why = identifier_by_values(values)

    # Assert
    assert why == "person names (by its values: 3 of 6)"


def test_blank_values_do_not_count_towards_the_share() -> None:
    # Prepare: one ZIP-like value and two blank (whitespace only) cells
    values = ["12345", "  ", " ", ""]

    # Execute
    why = identifier_by_values(values)

    # Assert: one of one non-empty value
    assert why == "ZIP codes (by its values: 1 of 1)"


def test_a_strong_match_counts_only_non_blank_values() -> None:
    # Prepare: one SSN and a blank cell
    values = ["123-45-6789", "   "]

    # Execute
    why = identifier_by_values(values)

    # Assert
    assert why == "social security numbers (by its values: 1 of 1; one is enough)"


def test_a_normalised_name_has_no_leading_or_trailing_underscores() -> None:
    # Prepare: names with punctuation and spaces at either end
    columns = ["(Age)", "Age (years)", "_chol_", "  Resting BP  "]

    # Execute
    names = [normalise(column) for column in columns]

    # Assert
    assert names == ["age", "age_years", "chol", "resting_bp"]
