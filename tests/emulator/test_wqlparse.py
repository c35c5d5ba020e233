"""The emulator's WQL parser and evaluator."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import CimValue, ObjectPath
from hyperv_agent.emulator.wqlparse import (
    And,
    AssociatorsQuery,
    CompareOp,
    Comparison,
    Expr,
    IsNull,
    Not,
    Or,
    ReferencesQuery,
    SelectQuery,
    WqlLiteral,
    evaluate,
    like_match,
    parse,
    referenced_properties,
)
from hyperv_agent.errors import CimInvalidProperty, CimInvalidQuery

# --- helpers ------------------------------------------------------------------------------


def where_of(text: str) -> Expr:
    query = parse(text)
    assert isinstance(query, SelectQuery)
    assert query.where is not None
    return query.where


def lookup_in(values: Mapping[str, CimValue]) -> Callable[[str], CimValue]:
    folded = {name.lower(): value for name, value in values.items()}

    def lookup(name: str) -> CimValue:
        if name.lower() not in folded:
            raise CimInvalidProperty(f"no property {name!r}")
        return folded[name.lower()]

    return lookup


def matches(text: str, **values: CimValue) -> bool:
    return evaluate(where_of(text), lookup_in(values))


def cond(condition: str, **values: CimValue) -> bool:
    return matches(f"SELECT * FROM C WHERE {condition}", **values)


# --- SELECT structure ---------------------------------------------------------------------


def test_select_star_has_no_properties_when_star_is_given() -> None:
    assert parse("SELECT * FROM Msvm_ComputerSystem") == SelectQuery(
        "Msvm_ComputerSystem", (), None
    )


def test_keywords_are_recognised_when_written_in_any_case() -> None:
    query = parse("sElEcT * fRoM Msvm_X wHeRe A = 1 aNd NoT B Is NoT nUlL oR C lIkE 'x'")
    assert isinstance(query, SelectQuery)
    assert query.where == Or(
        And(Comparison("A", "=", 1), Not(IsNull("B", negated=True))),
        Comparison("C", "LIKE", "x"),
    )


def test_property_list_is_kept_when_columns_are_named() -> None:
    query = parse("SELECT Name, __PATH , __CLASS,__RELPATH FROM Msvm_X")
    assert query == SelectQuery("Msvm_X", ("Name", "__PATH", "__CLASS", "__RELPATH"), None)


@pytest.mark.parametrize(
    ("text", "op"),
    [("A = 1", "="), ("A <> 1", "<>"), ("A != 1", "<>"), ("A < 1", "<"), ("A > 1", ">"),
     ("A <= 1", "<="), ("A >= 1", ">="), ("A=1", "=")],
)
def test_operator_is_normalised_when_parsed(text: str, op: CompareOp) -> None:
    assert where_of(f"SELECT * FROM C WHERE {text}") == Comparison("A", op, 1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("5 = A", Comparison("A", "=", 5)), ("5 < A", Comparison("A", ">", 5)),
     ("'x' >= A", Comparison("A", "<=", "x")), ("TRUE <> A", Comparison("A", "<>", True))],
)
def test_operator_is_flipped_when_literal_comes_first(text: str, expected: Expr) -> None:
    assert where_of(f"SELECT * FROM C WHERE {text}") == expected


@pytest.mark.parametrize(
    ("literal", "value"),
    [("'abc'", "abc"), ('"abc"', "abc"), ("''", ""), ("'it''s'", "it's"), ('"say ""hi"""',
     'say "hi"'), (r"'a\'b'", "a'b"), (r"'a\\b'", "a\\b"), (r"'\x\%'", "x%"), ("42", 42),
     ("-7", -7), ("0", 0), ("TRUE", True), ("false", False), ("18446744073709551615",
     18446744073709551615)],
)
def test_literal_is_decoded_when_written_in_any_supported_form(
    literal: str, value: WqlLiteral
) -> None:
    assert where_of(f"SELECT * FROM C WHERE A = {literal}") == Comparison("A", "=", value)


def test_not_binds_tighter_than_and_when_mixed() -> None:
    assert where_of("SELECT * FROM C WHERE NOT A = 1 AND B = 2") == And(
        Not(Comparison("A", "=", 1)), Comparison("B", "=", 2)
    )


def test_and_binds_tighter_than_or_when_mixed() -> None:
    assert where_of("SELECT * FROM C WHERE A = 1 OR B = 2 AND C = 3") == Or(
        Comparison("A", "=", 1), And(Comparison("B", "=", 2), Comparison("C", "=", 3))
    )


def test_parentheses_override_precedence_when_present() -> None:
    assert where_of("SELECT * FROM C WHERE (A = 1 OR B = 2) AND NOT (C = 3)") == And(
        Or(Comparison("A", "=", 1), Comparison("B", "=", 2)), Not(Comparison("C", "=", 3))
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [("A IS NULL", IsNull("A")), ("A IS NOT NULL", IsNull("A", negated=True)),
     ("A = NULL", IsNull("A")), ("A <> NULL", IsNull("A", negated=True)),
     ("A != null", IsNull("A", negated=True))],
)
def test_null_test_is_parsed_when_written_with_is_or_equals(text: str, expected: Expr) -> None:
    assert where_of(f"SELECT * FROM C WHERE {text}") == expected


def test_not_like_is_parsed_when_not_precedes_like() -> None:
    assert where_of("SELECT * FROM C WHERE A NOT LIKE 'x%'") == Not(
        Comparison("A", "LIKE", "x%")
    )


def test_referenced_properties_lists_every_name_when_nested() -> None:
    expr = where_of("SELECT * FROM C WHERE A = 1 OR NOT (B IS NULL AND 3 < c) OR A = 2")
    assert referenced_properties(expr) == {"A", "B", "c"}


# --- ASSOCIATORS OF / REFERENCES OF -------------------------------------------------------


def test_associators_keeps_raw_path_when_no_clauses() -> None:
    text = 'ASSOCIATORS OF {Msvm_ComputerSystem.CreationClassName="Msvm_ComputerSystem",Name="X"}'
    assert parse(text) == AssociatorsQuery(
        'Msvm_ComputerSystem.CreationClassName="Msvm_ComputerSystem",Name="X"', None, None,
        None, None,
    )


def test_associators_reads_clauses_when_given_in_any_order_and_case() -> None:
    text = (
        "associators of { \\\\HOST\\root\\virtualization\\v2:Msvm_X.Id=\"a}b\" } where "
        "resultrole = Dependent ROLE=Antecedent ResultClass = Msvm_Y AssocClass=Msvm_Dep"
    )
    assert parse(text) == AssociatorsQuery(
        '\\\\HOST\\root\\virtualization\\v2:Msvm_X.Id="a}b"', "Msvm_Dep", "Msvm_Y",
        "Antecedent", "Dependent",
    )


def test_references_reads_clauses_when_given() -> None:
    text = "REFERENCES OF {Msvm_X.Id='q'} WHERE Role = Antecedent ResultClass = Msvm_Dep"
    assert parse(text) == ReferencesQuery("Msvm_X.Id='q'", "Msvm_Dep", "Antecedent")


@pytest.mark.parametrize(
    "text",
    ["ASSOCIATORS OF {X=@} WHERE", "ASSOCIATORS OF {X=@} WHERE KeysOnly",
     "ASSOCIATORS OF {X=@} WHERE Role = A Role = B", "ASSOCIATORS OF {X=@} WHERE Role A",
     "REFERENCES OF {X=@} WHERE AssocClass = A", "ASSOCIATORS {X=@}", "ASSOCIATORS OF X",
     "ASSOCIATORS OF {X=@", "ASSOCIATORS OF {  }", "REFERENCES OF {X=@} Role = A"],
)
def test_association_query_is_refused_when_malformed(text: str) -> None:
    with pytest.raises(CimInvalidQuery):
        parse(text)


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("SELEC * FROM x", "'SELEC' at column 1"),
     ("SELECT * FROM x WHERE A = 'abc", "unterminated string literal starting at column 27"),
     ('SELECT * FROM x WHERE A = "abc\\"', "unterminated string"),
     ("SELECT * FROM x WHERE AND", "found 'AND' at column 23"),
     ("SELECT * FROM x WHERE A = 1 B", "expected end of query, found 'B' at column 29"),
     ("SELECT * FROM x y", "found 'y'"), ("", "empty query"), ("   \n ", "empty query"),
     ("SELECT * FROM", "found end of query"), ("SELECT FROM x", "found 'FROM'"),
     ("SELECT * FROM x WHERE", "found end of query"), ("SELECT * FROM x WHERE (A = 1",
     "expected ')'"), ("SELECT * FROM x WHERE A = ", "expected a literal"),
     ("SELECT * FROM x WHERE A ! 1", "unexpected character '!' at column 25"),
     ("SELECT * FROM x WHERE A LIKE 5", "quoted LIKE pattern"),
     ("SELECT * FROM x WHERE A LIKE 'ab[c'", "unterminated '['"),
     ("SELECT * FROM x WHERE A LIKE '[z-a]'", "reversed range"),
     ("SELECT * FROM x WHERE A < NULL", "NULL compares only"),
     ("SELECT * FROM x WHERE A IS 5", "expected NULL"),
     ("SELECT a, FROM x", "expected a property name"), ("SELECT * FROM x WHERE 1 = 2",
     "expected a property name"), ("DELETE FROM x", "expected SELECT")],
)
def test_parse_raises_one_line_error_when_text_is_garbage(text: str, fragment: str) -> None:
    with pytest.raises(CimInvalidQuery) as caught:
        parse(text)
    assert fragment in str(caught.value)
    assert "\n" not in str(caught.value)


# --- evaluation: strings, integers, booleans, nulls, arrays -------------------------------


def test_string_equality_ignores_case_when_values_differ_in_case() -> None:
    assert cond("Name = 'MyVm'", Name="MYVM")
    assert not cond("Name = 'MyVm'", Name="MyVm2")
    assert cond("Name <> 'other'", Name="MyVm")


def test_string_order_ignores_case_when_compared() -> None:
    assert cond("Name < 'b'", Name="A")
    assert cond("Name >= 'a'", Name="A")
    assert not cond("Name > 'B'", Name="a")


def test_integers_compare_numerically_when_property_is_integer() -> None:
    assert cond("Count >= 10", Count=10)
    assert cond("Count > 9", Count=10)
    assert not cond("Count < 9", Count=10)
    assert cond("Count = -3", Count=-3)


def test_string_literal_is_converted_when_compared_with_integer_property() -> None:
    assert cond("EnabledState = '2'", EnabledState=2)
    assert cond("EnabledState < '10'", EnabledState=2)


def test_nothing_matches_when_string_literal_is_not_numeric_for_integer_property() -> None:
    assert not cond("EnabledState = 'two'", EnabledState=2)
    assert not cond("EnabledState <> 'two'", EnabledState=2)
    assert not cond("EnabledState = TRUE", EnabledState=1)


def test_integer_literal_compares_as_text_when_property_is_string() -> None:
    assert cond("Name = 5", Name="5")
    assert not cond("Name = 5", Name="05")


def test_boolean_matches_when_compared_with_keyword_or_string() -> None:
    assert cond("Enabled = TRUE", Enabled=True)
    assert cond("Enabled = 'true'", Enabled=True)
    assert cond("Enabled = 'FALSE'", Enabled=False)
    assert cond("Enabled <> FALSE", Enabled=True)
    assert cond("Enabled = 1", Enabled=True)
    assert not cond("Enabled = 'yes'", Enabled=True)
    assert not cond("Enabled = TRUE", Enabled=False)


@pytest.mark.parametrize(
    "condition",
    ["A = 1", "A <> 1", "A < 1", "A > 1", "A = 'x'", "A <> 'x'", "A LIKE '%'", "A = TRUE"],
)
def test_every_comparison_is_false_when_property_is_null(condition: str) -> None:
    assert not cond(condition, A=None)


def test_is_null_is_true_only_when_property_is_null() -> None:
    assert cond("A IS NULL", A=None)
    assert not cond("A IS NOT NULL", A=None)
    assert cond("A IS NOT NULL", A="")
    assert not cond("A IS NULL", A=())


def test_not_negates_comparison_when_property_is_null() -> None:
    assert cond("NOT A = 1", A=None)


def test_array_matches_when_any_element_matches() -> None:
    assert cond("Ids = 2", Ids=(1, 2, 3))
    assert not cond("Ids = 4", Ids=(1, 2, 3))
    assert cond("Names LIKE 'b%'", Names=("alpha", "Beta"))
    assert cond("Ids <> 1", Ids=(1, 2))
    assert not cond("Ids = 1", Ids=())


def test_and_or_not_combine_when_evaluated() -> None:
    text = "(A = 1 OR B = 'x') AND NOT C = TRUE"
    assert cond(text, A=1, B="y", C=False)
    assert cond(text, A=0, B="X", C=False)
    assert not cond(text, A=1, B="x", C=True)
    assert not cond(text, A=0, B="y", C=False)


def test_unknown_property_error_propagates_when_looked_up() -> None:
    with pytest.raises(CimInvalidProperty):
        cond("Missing = 1", A=1)


# --- LIKE ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [("%", "", True), ("%", "anything\nat all", True), ("a%", "ABC", True),
     ("%c", "abc", True), ("%b%", "abc", True), ("a_c", "abc", True), ("a_c", "ac", False),
     ("a_c", "abbc", False), ("abc", "abcd", False), ("[abc]x", "Bx", True),
     ("[a-c]x", "dx", False), ("[a-c]x", "Cx", True), ("[^abc]x", "dx", True),
     ("[^abc]x", "ax", False), ("[%]", "%", True), ("[%]", "a", False), ("[_]", "_", True),
     ("[[]", "[", True), ("a]", "a]", True), ("[]]", "]", True), ("[a-]", "-", True),
     ("%.*", "x.*", True), ("%.*", "xyz", False), ("(a)", "(a)", True),
     ("%\\Default", "Microsoft:1234\\Default", True), ("STRAẞE", "straße", True)],
)
def test_like_matches_whole_value_when_pattern_has_wildcards_and_sets(
    pattern: str, value: str, expected: bool
) -> None:
    assert like_match(pattern, value) is expected


def test_like_matches_text_of_value_when_property_is_integer() -> None:
    assert cond("Count LIKE '1%'", Count=123)
    assert not cond("Count LIKE '2%'", Count=123)


def test_equality_and_like_agree_when_case_folding_is_unusual() -> None:
    for left, right in [("ς", "Σ"), ("σ", "ς"), ("ß", "SS"), ("ǅ", "ǆ"), ("K", "k")]:
        assert cond(f"A = '{right}'", A=left) is like_match(right, left)


# --- texts os-win and CloudStack write ----------------------------------------------------

SCSI = "Microsoft:Hyper-V:Synthetic SCSI Controller"


@pytest.mark.parametrize(
    "text",
    [
        "SELECT * FROM Msvm_ResourceAllocationSettingData WHERE ResourceSubType = "
        "'Microsoft:Hyper-V:Synthetic SCSI Controller' AND InstanceID LIKE '%\\\\Default'",
        "SELECT * FROM Msvm_ResourceAllocationSettingData WHERE ResourceSubType = "
        "'Microsoft:Hyper-V:Synthetic SCSI Controller' AND InstanceID LIKE '%\\Default'",
        'SELECT * FROM Msvm_ResourceAllocationSettingData WHERE ResourceSubType = '
        '"Microsoft:Hyper-V:Synthetic SCSI Controller" AND InstanceID LIKE "%Default"',
    ],
)
def test_default_scsi_controller_is_found_when_queried_os_win_or_cloudstack_style(
    text: str,
) -> None:
    default = {"ResourceSubType": SCSI, "InstanceID": "Microsoft:ABC-123\\Default"}
    other = {"ResourceSubType": SCSI, "InstanceID": "Microsoft:ABC-123\\Minimum"}
    assert matches(text, **default)
    assert not matches(text, **other)
    assert not matches(text, **{**default, "ResourceSubType": "Microsoft:Hyper-V:Disk"})


def test_vm_is_found_when_queried_by_element_name_os_win_style() -> None:
    text = "SELECT * FROM Msvm_ComputerSystem WHERE ElementName = 'i-2-10-VM' AND Caption <> " \
        "'Hosting Computer System'"
    assert matches(text, ElementName="I-2-10-vm", Caption="Virtual Machine")
    assert not matches(text, ElementName="i-2-10-VM", Caption="Hosting Computer System")


# --- every text the builder writes round-trips --------------------------------------------

TRICKY = st.text(alphabet="aBz09 '\"\\%_[]^-{}.é", max_size=12)


def candidates_for(value: str, others: list[str]) -> list[str]:
    return [value, value.upper(), value.lower(), value.swapcase(), value + "x", "x" + value,
            value[:-1], value[1:], *others]


@given(TRICKY, st.lists(TRICKY, max_size=5))
def test_eq_matches_exactly_equal_values_when_built_by_wql_builder(
    value: str, others: list[str]
) -> None:
    expr = where_of(wql.select("Msvm_X", wql.eq("Name", value)))
    for candidate in candidates_for(value, others):
        expected = candidate.lower() == value.lower()
        assert evaluate(expr, lookup_in({"Name": candidate})) is expected


@given(TRICKY, st.lists(TRICKY, max_size=5))
def test_ne_matches_exactly_different_values_when_built_by_wql_builder(
    value: str, others: list[str]
) -> None:
    expr = where_of(wql.select("Msvm_X", wql.ne("Name", value)))
    for candidate in candidates_for(value, others):
        expected = candidate.lower() != value.lower()
        assert evaluate(expr, lookup_in({"Name": candidate})) is expected


@given(TRICKY, st.lists(TRICKY, max_size=5))
def test_starts_with_matches_exactly_prefixed_values_when_built_by_wql_builder(
    prefix: str, others: list[str]
) -> None:
    expr = where_of(wql.select("Msvm_X", wql.starts_with("Name", prefix)))
    for candidate in candidates_for(prefix, others):
        expected = candidate.lower().startswith(prefix.lower())
        assert evaluate(expr, lookup_in({"Name": candidate})) is expected


@given(TRICKY, st.lists(TRICKY, max_size=5))
def test_ends_with_matches_exactly_suffixed_values_when_built_by_wql_builder(
    suffix: str, others: list[str]
) -> None:
    expr = where_of(wql.select("Msvm_X", wql.ends_with("Name", suffix)))
    for candidate in candidates_for(suffix, others):
        expected = candidate.lower().endswith(suffix.lower())
        assert evaluate(expr, lookup_in({"Name": candidate})) is expected


@given(st.lists(TRICKY, min_size=1, max_size=4), TRICKY)
def test_any_of_matches_exactly_listed_values_when_built_by_wql_builder(
    values: list[str], candidate: str
) -> None:
    expr = where_of(wql.select("Msvm_X", wql.any_of("Name", values)))
    expected = candidate.lower() in {value.lower() for value in values}
    assert evaluate(expr, lookup_in({"Name": candidate})) is expected
    assert evaluate(expr, lookup_in({"Name": values[-1].upper()}))


@given(st.lists(TRICKY, min_size=1, max_size=4), TRICKY)
def test_either_matches_when_any_of_its_conditions_does_when_built_by_wql_builder(
    prefixes: list[str], candidate: str
) -> None:
    expr = where_of(wql.select("Msvm_X", wql.either(wql.starts_with("Name", prefix)
                                                    for prefix in prefixes)))
    expected = any(candidate.lower().startswith(prefix.lower()) for prefix in prefixes)
    assert evaluate(expr, lookup_in({"Name": candidate})) is expected


def test_either_of_no_condition_is_refused() -> None:
    with pytest.raises(CimInvalidQuery, match="at least one"):
        wql.either([])


@given(st.integers(min_value=-(2**63), max_value=2**64), st.integers(-(2**63), 2**64))
def test_integer_conditions_compare_numerically_when_built_by_wql_builder(
    literal: int, value: int
) -> None:
    text = wql.select("C", wql.ge("N", literal) & (wql.eq("N", literal) | wql.ne("N", literal)))
    assert evaluate(where_of(text), lookup_in({"N": value})) is (value >= literal)


@given(st.booleans(), st.booleans())
def test_boolean_condition_matches_when_built_by_wql_builder(literal: bool, value: bool) -> None:
    text = wql.select("C", wql.eq("Flag", literal))
    assert evaluate(where_of(text), lookup_in({"Flag": value})) is (value == literal)


def test_select_columns_round_trip_when_built_by_wql_builder() -> None:
    text = wql.select("Msvm_X", wql.like("Name", "vm-%"), properties=["Name", "__PATH"])
    assert parse(text) == SelectQuery(
        "Msvm_X", ("Name", "__PATH"), Comparison("Name", "LIKE", "vm-%")
    )


def test_condition_tree_round_trips_when_combined_by_wql_builder() -> None:
    condition = (wql.eq("A", "x") | wql.eq("B", 1)) & wql.ne("C", True)
    assert where_of(wql.select("C", condition)) == And(
        Or(Comparison("A", "=", "x"), Comparison("B", "=", 1)), Comparison("C", "<>", True)
    )


KEY_VALUES = st.text(alphabet="aZ09 '\"\\,.:=@%_é", max_size=10)
PATHS = st.builds(
    lambda klass, pairs: ObjectPath(klass, tuple(pairs)),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True),
    st.lists(
        st.tuples(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True), KEY_VALUES),
        max_size=3,
    ),
)
NAMES = st.none() | st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True).filter(
    lambda name: name.upper() not in {"AND", "OR", "NOT", "LIKE", "IS", "NULL", "TRUE", "FALSE",
                                      "SELECT", "FROM", "WHERE"}
)


@given(PATHS, NAMES, NAMES, NAMES, NAMES)
def test_associators_round_trips_when_built_by_wql_builder(
    path: ObjectPath, assoc: str | None, result: str | None, role: str | None,
    result_role: str | None,
) -> None:
    text = wql.associators_of(
        path, assoc_class=assoc, result_class=result, role=role, result_role=result_role
    )
    query = parse(text)
    assert query == AssociatorsQuery(path.relative(), assoc, result, role, result_role)
    assert ObjectPath.parse(query.path_text) == path


@given(PATHS, NAMES, NAMES)
def test_references_round_trips_when_built_by_wql_builder(
    path: ObjectPath, result: str | None, role: str | None
) -> None:
    query = parse(wql.references_of(path, result_class=result, role=role))
    assert query == ReferencesQuery(path.relative(), result, role)
    assert ObjectPath.parse(query.path_text) == path
