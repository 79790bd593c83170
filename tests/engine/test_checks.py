"""Answer normalisation, number extraction and the analyst's checks (regex, schema, expression).

These are pure functions, so they are tested directly, with tables of cases and, for
normalisation, with hypothesis: votes and evaluation checkers rely on the same rules.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.checks import (
    CheckError,
    answer_key,
    check_selector,
    expression_score,
    extract_number,
    json_schema_passes,
    normalise_text,
    regex_passes,
)
from engine.plan.compute_config import SelectorConfig

# -- normalisation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("Paris", "paris"),
        ("  PARIS.  ", "paris"),
        ("**Paris**", "paris"),
        ("*Paris*!", "paris"),
        ("__Paris__", "paris"),
        ("~~Lyon~~ Paris", "lyon paris"),
        ("`Paris`", "paris"),
        ('"Paris"', "paris"),
        ("“Paris”", "paris"),
        ("'Paris'", "paris"),
        ("Answer: Paris", "paris"),
        ("answer:Paris", "paris"),
        ("The answer is Paris.", "paris"),
        ("The answer is: **Paris**.", "paris"),
        ("Final answer: Paris", "paris"),
        ("Answer: answer: Paris", "paris"),
        ("(Paris)", "paris"),
        ("# Paris", "paris"),
        ("New\n  York\tCity", "new york city"),
        ("Ｐａｒｉｓ", "paris"),  # NFKC folds full-width letters
        ("Straße", "strasse"),
        ("don't stop", "don't stop"),  # an apostrophe inside a word stays
        ("snake_case_name", "snake_case_name"),  # so do inner underscores
        ("answer the question", "answer the question"),  # "answer" without ":" or "is" stays
        ("-3", "-3"),
        ("12%", "12%"),
        ("", ""),
    ],
)
def test_normalise_text_cases(text: str, normalised: str) -> None:
    assert normalise_text(text) == normalised


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_normalise_text_is_idempotent(text: str) -> None:
    once = normalise_text(text)
    assert normalise_text(once) == once


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from([*"ab *_`'\".:!?()#\n", "answer:", "The answer is ", "İ", "ß"]),
        max_size=20,
    ).map("".join)
)
def test_normalise_text_is_idempotent_on_markup_heavy_text(text: str) -> None:
    once = normalise_text(text)
    assert normalise_text(once) == once
    assert once == once.strip() and "  " not in once and "*" not in once


# -- numbers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("12", 12.0),
        ("The answer is 12.", 12.0),
        ("-3", -3.0),
        ("It is −3 degrees", -3.0),  # Unicode minus
        ("+4", 4.0),
        ("1,234.5", 1234.5),
        ("$1,234,567", 1234567.0),
        ("The total is 1,234, not more", 1234.0),
        ("1,2,3", 3.0),  # a list, not thousands
        ("12%", 12.0),
        ("3/4", 0.75),
        ("about 3 / 4.", 0.75),
        ("1/0", 0.0),
        ("1e3", 1000.0),
        ("2.5E-2", 0.025),
        (".5", 0.5),
        ("3.14159", 3.14159),
        ("from 3 to 7", 7.0),  # the LAST number
        ("7 + 5 = 12", 12.0),
        ("5-3", 3.0),  # a hyphen after a digit is not a sign
        ("pages 10-12", 12.0),
        ("x2", None),  # inside a word
        ("version v1.2.3", None),
        ("1.2.3", 1.2),  # a version string: the trailing pieces are not numbers
        ("9e999", None),  # overflow is no number
        ("no digits here", None),
        ("", None),
        ("１２", 12.0),  # full-width digits
    ],
)
def test_extract_number_cases(text: str, number: float | None) -> None:
    got = extract_number(text)
    if number is None:
        assert got is None
    else:
        assert got == pytest.approx(number)


@pytest.mark.parametrize(
    ("text", "vote_on", "everywhere", "key"),
    [
        ("The answer is 12.0", "number", False, "12"),
        ("0.75", "number", False, "0.75"),
        ("3/4", "number", False, "0.75"),
        ("-0", "number", False, "0"),
        ("no number", "number", False, ""),
        ("The answer is **Paris**.", "text", False, "paris"),
        ("\n\n  Paris.\nbecause it is", "first_line", False, "paris"),
        ("12 apples", "auto", True, "12"),
        ("12 apples", "auto", False, "12 apples"),
    ],
)
def test_answer_key(text: str, vote_on: str, everywhere: bool, key: str) -> None:
    assert answer_key(text, vote_on, numbers_everywhere=everywhere) == key  # type: ignore[arg-type]


def test_answer_keys_of_the_same_number_written_differently_agree() -> None:
    texts = ["12", "12.0", "The answer is 12.", "**12**", "1.2e1"]
    assert {answer_key(text, "number") for text in texts} == {"12"}


# -- regex ---------------------------------------------------------------------------------


def test_regex_is_case_insensitive_and_multiline() -> None:
    assert regex_passes("paris", "The capital is PARIS.")
    assert regex_passes(r"^42$", "Let me think.\n42\nDone.")
    assert not regex_passes(r"\A42\Z", "Let me think.\n42\nDone.")
    assert not regex_passes("lyon", "Paris")


def test_invalid_regex_is_refused_naming_the_pattern_and_problem() -> None:
    with pytest.raises(CheckError) as error:
        regex_passes("(unclosed", "text")
    message = str(error.value)
    assert "'(unclosed'" in message and "missing )" in message and "position 0" in message


# -- JSON schema ---------------------------------------------------------------------------
SCHEMA = '{"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}'


@pytest.mark.parametrize(
    ("text", "passes"),
    [
        ('{"n": 3}', True),
        ('  {"n": 3}  ', True),
        ('Here you go:\n```json\n{"n": 3}\n```\nDone.', True),
        ('Sure! {"n": 3} is my answer.', True),
        ('I think [1, 2] and then {"n": 4}', False),  # the first bracket span is the array
        ('{"n": "three"}', False),
        ('{"m": 3}', False),
        ("no json at all", False),
        ('{"n": 3', False),
    ],
)
def test_json_schema_passes(text: str, passes: bool) -> None:
    ok, reason = json_schema_passes(SCHEMA, text)
    assert ok is passes, reason


def test_json_schema_failure_says_where_and_why() -> None:
    ok, reason = json_schema_passes(SCHEMA, '{"n": "three"}')
    assert not ok and reason.startswith("at n:") and "integer" in reason
    assert json_schema_passes(SCHEMA, "nothing") == (False, "no JSON found in the output")


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        ('{"type": "object",', "not valid JSON (line 1, column 19"),
        ('{"type": "integr"}', "invalid at type"),
        ('{"required": "n"}', "invalid at required"),
        ("[1, 2]", "must be a JSON object, not list"),
    ],
)
def test_bad_schema_is_refused_with_what_and_where(schema: str, fragment: str) -> None:
    with pytest.raises(CheckError, match="JSON schema") as error:
        json_schema_passes(schema, '{"n": 1}')
    assert fragment in str(error.value)


# -- expressions ---------------------------------------------------------------------------
TEXT = "The answer is 42.\nIt is the answer."


@pytest.mark.parametrize(
    ("expression", "score"),
    [
        ("number == 42", 1.0),
        ("number > 100", 0.0),
        ("number", 42.0),
        ("length", float(len(TEXT))),
        ("words", 8.0),
        ("len(lines)", 2.0),
        ("lines[0] == 'The answer is 42.'", 1.0),
        ("contains(output, 'ANSWER')", 1.0),
        ("matches(r'^it is', output)", 1.0),
        ("startswith(output, 'The') and endswith(output, '.')", 1.0),
        ("lower(output).count('answer')", 2.0),
        ("upper(lines[1]) == 'IT IS THE ANSWER.'", 1.0),
        ("max(1, min(words, 3)) + abs(-1)", 4.0),
        ("round(number / 5)", 8.0),
        ("output.lower().startswith('the')", 1.0),
        ("sum([len(line) for line in lines])", float(len("The answer is 42.It is the answer."))),
        ("number is not None and number > 10", 1.0),
        ("1 if 'answer' in output else 0", 1.0),
    ],
)
def test_expression_scores(expression: str, score: float) -> None:
    assert expression_score(expression, TEXT) == pytest.approx(score)


def test_expression_number_is_none_without_a_number() -> None:
    assert expression_score("number is None", "no digits") == 1.0
    with pytest.raises(CheckError, match="number is None when the output has no number"):
        expression_score("number > 3", "no digits")


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("len(", "syntax error"),
        ("foo + 1", "unknown name 'foo'"),
        ("open('x')", "unknown function 'open'"),
        ("output", "gave str"),
        ("lines", "gave list"),
        ("lines[9]", "IndexError"),
        ("2 ** 100000", "exponent 100000 is larger than 1000"),
        ("'ab' * 10 ** 6", "long"),
        ("x" * 2001, "2001 characters long"),
        ("   ", "empty"),
    ],
)
def test_expression_errors_quote_the_expression_and_the_problem(
    expression: str, fragment: str
) -> None:
    with pytest.raises(CheckError) as error:
        expression_score(expression, TEXT)
    message = str(error.value)
    assert fragment in message
    if expression.strip() and len(expression) <= 2000:
        assert repr(expression) in message


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('echo hacked')",
        "output.__class__",
        "output.__class__.__mro__",
        "lines.__len__()",
        "(1).__class__.__subclasses__()",
        "output.format(1)",
        "output.encode()",
        "lines.append(1)",
    ],
)
def test_expression_sandbox_refuses_dunders_imports_and_unlisted_methods(expression: str) -> None:
    with pytest.raises(CheckError) as error:
        expression_score(expression, TEXT)
    assert repr(expression) in str(error.value)


# -- selector validation -------------------------------------------------------------------


def test_check_selector_accepts_good_selectors() -> None:
    check_selector(SelectorConfig(kind="regex", pattern=r"\d+"))
    check_selector(SelectorConfig(kind="json_schema", json_schema=SCHEMA))
    check_selector(SelectorConfig(kind="expression", expression="number > 3"))
    check_selector(SelectorConfig(kind="expression", expression="lines[1] == 'x'"))
    check_selector(SelectorConfig(kind="judge"))


@pytest.mark.parametrize(
    ("selector", "fragment"),
    [
        (SelectorConfig(kind="regex", pattern="[a-"), "regex '[a-' is invalid"),
        (SelectorConfig(kind="json_schema", json_schema="{"), "not valid JSON"),
        (SelectorConfig(kind="json_schema", json_schema='{"type": 3}'), "invalid at type"),
        (SelectorConfig(kind="expression", expression="nmber > 3"), "unknown name 'nmber'"),
        (SelectorConfig(kind="expression", expression="output"), "gave str"),
        (SelectorConfig(kind="expression", expression="lines[7]"), "fails on every sample"),
        (SelectorConfig(kind="expression", expression="output.__class__"), "__class__"),
    ],
)
def test_check_selector_refuses_bad_selectors_saying_what(
    selector: SelectorConfig, fragment: str
) -> None:
    with pytest.raises(CheckError) as error:
        check_selector(selector)
    assert fragment in str(error.value)
