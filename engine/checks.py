"""Answer normalisation and the analyst's checks, shared by best-of-N selectors and evaluations.

Votes, selectors and evaluation checkers must agree on what "the same answer" and "passes" mean,
or a configuration that wins the vote would lose the evaluation for reasons nobody can see. So
the rules live here once: how text is normalised, which number an answer gives, how a regex, a
JSON schema or an expression judges an output. Every mistake in what the analyst wrote (a bad
pattern, schema or expression) is a ``CheckError`` saying what is wrong and where.
"""

from __future__ import annotations

import ast
import functools
import json
import math
import re
import unicodedata
from collections.abc import Callable
from typing import Any

import simpleeval

from engine.errors import CheckError
from engine.plan.compute_config import SelectorConfig, VoteOn

#: Longest expression accepted (the same bound as ``SelectorConfig.expression``).
MAX_EXPRESSION_CHARS = 2000
#: Largest exponent ``**`` accepts in an expression (simpleeval's own bound is 4,000,000).
MAX_EXPRESSION_POWER = 1000
#: Outputs longer than this are cut before a JSON search (a runaway sample, not an answer).
MAX_JSON_SEARCH_CHARS = 200_000
#: Starting brackets tried when looking for a JSON value inside prose.
MAX_JSON_CANDIDATES = 200
#: Texts ``check_selector`` tries an expression on; it must work on at least one.
SAMPLE_OUTPUTS = (
    "The answer is 42.",
    "Paris\nThe capital of France is Paris.",
    '{"answer": "yes", "confidence": 0.9}',
)


# -- normalisation ---------------------------------------------------------------------------
_QUOTES = str.maketrans({"‘": "'", "’": "'", "‚": "'", "‛": "'", "`": "'"})
_DOUBLE_QUOTES = re.compile(r"[\"“”„‟«»]")
# A single quote at a word's edge is a quote; inside a word ("don't") it is an apostrophe.
_EDGE_APOSTROPHE = re.compile(r"(?<!\w)'+|'+(?!\w)")
_EMPHASIS = re.compile(r"\*+|~~")
# Underscores at a word's edge are emphasis (``__bold__``); inside one (snake_case) they stay.
_EDGE_UNDERSCORE = re.compile(r"(?<![^\W_])_+|_+(?![^\W_])")
_HEADING = re.compile(r"^#+\s+")
_ANSWER_PREFIX = re.compile(
    r"^(?:the\s+)?(?:final\s+|correct\s+)?answer(?:\s*:|\s+is\b\s*:?)\s*", re.IGNORECASE
)
_EDGE_PUNCTUATION = " \t\n.,;:!?"
_PAIRS = (("(", ")"), ("[", "]"), ("{", "}"), ("<", ">"))


def _normalise_once(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold().translate(_QUOTES)
    text = _DOUBLE_QUOTES.sub("", text)
    text = _EMPHASIS.sub("", text)
    text = _EDGE_UNDERSCORE.sub("", text)
    text = _EDGE_APOSTROPHE.sub("", text)
    text = " ".join(text.split())
    text = _HEADING.sub("", text)
    text = _ANSWER_PREFIX.sub("", text)
    text = text.strip(_EDGE_PUNCTUATION)
    for opening, closing in _PAIRS:
        if len(text) >= 2 and text[0] == opening and text[-1] == closing:
            text = text[1:-1]
    return text.strip()


def normalise_text(text: str) -> str:
    """The comparable form of an answer.

    NFKC, case-folded (lowercase, and ``ß`` as ``ss``), markdown emphasis (``*``, ``**``,
    ``~~``, edge underscores, backticks) and quotes removed, whitespace collapsed to single
    spaces, a leading ``answer:`` / ``the answer is`` / ``final answer:`` and a heading marker
    dropped, and surrounding punctuation (``.,;:!?`` and one enclosing pair of brackets) stripped.
    Repeated until nothing changes, so it is idempotent: ``"Answer: **Paris**."`` -> ``"paris"``.
    """
    for _ in range(50):  # every pass shortens the text or leaves it be; 50 is never reached
        again = _normalise_once(text)
        if again == text:
            break
        text = again
    return text


# -- numbers ---------------------------------------------------------------------------------
_NUMBER = re.compile(
    r"""
    (?<![\w.])                                   # not inside a word or another number
    (?P<sign>[-+]?)
    (?P<body>\d{1,3}(?:,\d{3})+(?!\d|,\d)(?:\.\d+)?  # 1,234 or 1,234.5
           |\d+(?:\.\d+)?                          # 12 or 12.5
           |\.\d+)                                 # .5
    (?:[eE](?P<exp>[-+]?\d{1,3})(?!\d))?         # 1e3 (exponents up to three digits)
    (?:\s*/\s*(?P<den>\d+(?:\.\d+)?)(?!\d|\.\d))?  # 3/4
    """,
    re.VERBOSE,
)


def extract_number(text: str) -> float | None:
    """The last number written in ``text``, or None if there is none.

    Understands ``-3``, ``+3``, ``−3`` (Unicode minus), ``1,234.5`` (comma thousands), ``.5``,
    ``1e3``, ``12%`` (the ``%`` is ignored: 12.0) and ``3/4`` (0.75; with a zero denominator the
    last number written is 0). A minus directly after a letter or digit is a hyphen, not a sign
    (``5-3`` gives 3). A value that overflows a float counts as no number.
    """
    text = unicodedata.normalize("NFKC", text).replace("−", "-")
    last = None
    for last in _NUMBER.finditer(text):  # noqa: B007 - only the last match is wanted
        pass
    if last is None:
        return None
    # float() of the literal turns an overflow into inf (dropped below) instead of raising.
    value = float(last["body"].replace(",", "") + (f"e{last['exp']}" if last["exp"] else ""))
    if last["den"] is not None:
        denominator = float(last["den"])
        value = value / denominator if denominator else 0.0
    if last["sign"] == "-":
        value = -value
    if not math.isfinite(value):
        return None
    return value + 0.0  # -0.0 -> 0.0


def number_text(value: float) -> str:
    """Canonical text of a number: ``12`` for 12.0, ``0.75``, ``1e+20``; 12 significant digits."""
    text = f"{value:.12g}"
    return "0" if text == "-0" else text


def answer_key(text: str, vote_on: VoteOn, *, numbers_everywhere: bool = False) -> str:
    """What a vote compares for one answer.

    ``number``: the canonical text of its last number, or ``""`` if it has none; ``text``: its
    ``normalise_text``; ``first_line``: ``normalise_text`` of its first non-blank line; ``auto``:
    the caller decides, usually by whether every sample has a number (``numbers_everywhere``).
    """
    if vote_on == "auto":
        vote_on = "number" if numbers_everywhere else "text"
    if vote_on == "number":
        value = extract_number(text)
        return "" if value is None else number_text(value)
    if vote_on == "first_line":
        line = next((line for line in text.splitlines() if line.strip()), "")
        return normalise_text(line)
    if vote_on == "text":
        return normalise_text(text)
    raise CheckError(f"Unknown vote_on {vote_on!r}: use auto, number, text or first_line.")


# -- regex -----------------------------------------------------------------------------------
REGEX_FLAGS = re.IGNORECASE | re.MULTILINE


@functools.lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """``pattern`` compiled with ``REGEX_FLAGS``; ``CheckError`` saying where it is wrong."""
    try:
        return re.compile(pattern, REGEX_FLAGS)
    except re.error as exc:
        where = f" at position {exc.pos}" if exc.pos is not None else ""
        raise CheckError(f"The regex {pattern!r} is invalid: {exc.msg}{where}.") from exc


def regex_passes(pattern: str, text: str) -> bool:
    """Whether ``pattern`` is found anywhere in ``text`` (``re.search``).

    Case-insensitive, and multi-line: ``^`` and ``$`` match at every line's start and end, so
    ``^42$`` passes an output whose any line is exactly ``42``. Use ``\\A`` and ``\\Z`` for the
    whole text's ends. An invalid pattern raises ``CheckError``.
    """
    return compile_pattern(pattern).search(text) is not None


# -- JSON schema -----------------------------------------------------------------------------
_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n(.*?)```", re.DOTALL)


def parse_schema(schema_text: str) -> Any:
    """The schema in ``schema_text``, checked against its metaschema; ``CheckError`` if bad."""
    try:
        schema = json.loads(schema_text)
    except json.JSONDecodeError as exc:
        raise CheckError(
            f"The JSON schema is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})."
        ) from exc
    if not isinstance(schema, dict | bool):
        raise CheckError(
            f"The JSON schema must be a JSON object, not {type(schema).__name__} "
            f"({schema_text.strip()[:40]!r})."
        )
    import jsonschema  # 0.13 s, and only schema checks need it (every command imports this file)

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        where = "/".join(str(part) for part in exc.absolute_path) or "the top level"
        raise CheckError(f"The JSON schema is invalid at {where}: {exc.message}") from exc
    return schema


@functools.lru_cache(maxsize=64)
def _validator(schema_text: str) -> Any:
    import jsonschema

    schema = parse_schema(schema_text)
    return jsonschema.validators.validator_for(schema)(schema)


def find_json(text: str) -> tuple[bool, Any]:
    """The JSON value in ``text``: the whole text, a fenced code block, or the first ``{...}`` /
    ``[...]`` span that parses. Returns ``(found, value)``."""
    text = text[:MAX_JSON_SEARCH_CHARS]
    candidates = [text.strip()]
    candidates += [block.strip() for block in _FENCE.findall(text)]
    for candidate in candidates:
        try:
            return True, json.loads(candidate)
        except (json.JSONDecodeError, ValueError):
            continue
    decoder = json.JSONDecoder()
    starts = [match.start() for match in re.finditer(r"[{\[]", text)]
    for start in starts[:MAX_JSON_CANDIDATES]:
        try:
            value, _ = decoder.raw_decode(text, start)
        except (json.JSONDecodeError, ValueError):
            continue
        return True, value
    return False, None


def json_schema_passes(schema_text: str, text: str) -> tuple[bool, str]:
    """Whether ``text`` holds JSON valid for the schema, and why not.

    The JSON is looked for as ``find_json`` does. Returns ``(True, "valid")`` or ``(False,
    reason)``; the reason names the first failing place (``at items/0: 'x' is not of type
    'integer'``). A bad schema raises ``CheckError``.
    """
    validator = _validator(schema_text)
    found, value = find_json(text)
    if not found:
        return False, "no JSON found in the output"
    import jsonschema

    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return True, "valid"
    where = "/".join(str(part) for part in error.absolute_path) or "the top level"
    return False, f"at {where}: {error.message}"


# -- expressions -----------------------------------------------------------------------------
def _safe_power(base: Any, exponent: Any) -> Any:
    if isinstance(exponent, int | float) and abs(exponent) > MAX_EXPRESSION_POWER:
        raise simpleeval.NumberTooHigh(f"exponent {exponent} is larger than {MAX_EXPRESSION_POWER}")
    return base**exponent


def _contains(haystack: Any, needle: Any) -> bool:
    return str(needle).casefold() in str(haystack).casefold()


def _matches(pattern: str, text: Any) -> bool:
    return regex_passes(pattern, str(text))


#: Functions an expression may call, besides the names of ``expression_names``.
EXPRESSION_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": len,
    "lower": lambda text: str(text).lower(),
    "upper": lambda text: str(text).upper(),
    "contains": _contains,
    "matches": _matches,
    "startswith": lambda text, prefix: str(text).startswith(prefix),
    "endswith": lambda text, suffix: str(text).endswith(suffix),
    "abs": abs,
    "min": min,
    "max": max,
    "round": round,
    "int": int,
    "float": float,
    "str": str,
    "sum": sum,
    "any": any,
    "all": all,
}
_READ_ONLY_STR = {
    "count", "endswith", "find", "isalpha", "isdigit", "islower", "isnumeric", "isspace",
    "isupper", "lower", "lstrip", "rstrip", "split", "splitlines", "startswith", "strip",
    "upper", "casefold", "replace", "rfind", "title",
}  # fmt: skip
#: Attributes an expression may read, by type (no dunders, no mutating list methods).
_ALLOWED_ATTRS: dict[type | None, set[str]] = {
    str: _READ_ONLY_STR,
    list: {"count", "index"},
    int: {"is_integer", "real"},
    float: {"is_integer", "real"},
    bool: set(),
    None: set(),
}


def expression_names(text: str) -> dict[str, Any]:
    """Names an expression sees for ``text``.

    ``output`` (the text), ``length`` (characters), ``words`` (word count), ``lines`` (list of
    non-blank lines, stripped), ``number`` (``extract_number``, or None).
    """
    return {
        "output": text,
        "length": len(text),
        "words": len(text.split()),
        "lines": [line.strip() for line in text.splitlines() if line.strip()],
        "number": extract_number(text),
    }


def _evaluator(text: str) -> simpleeval.EvalWithCompoundTypes:
    operators = dict(simpleeval.DEFAULT_OPERATORS)
    operators[ast.Pow] = _safe_power
    # Built per call: comprehensions mutate the evaluator, so one cannot serve two threads.
    return simpleeval.EvalWithCompoundTypes(
        operators=operators,
        functions=dict(EXPRESSION_FUNCTIONS),
        names=expression_names(text),
        allowed_attrs=_ALLOWED_ATTRS,
    )


_STATIC_PROBLEMS = (
    SyntaxError,
    simpleeval.NameNotDefined,
    simpleeval.FunctionNotDefined,
    simpleeval.FeatureNotAvailable,
    simpleeval.OperatorNotDefined,
    simpleeval.AttributeDoesNotExist,
)


def _problem(exc: BaseException) -> str:
    if isinstance(exc, SyntaxError):
        return f"syntax error at column {exc.offset}: {exc.msg}"
    if isinstance(exc, simpleeval.NameNotDefined):
        names = ", ".join(expression_names(""))
        functions = ", ".join(EXPRESSION_FUNCTIONS)
        return f"unknown name {exc.name!r} (names: {names}; functions: {functions})"
    if isinstance(exc, simpleeval.FunctionNotDefined):
        return f"unknown function {exc.func_name!r} (functions: {', '.join(EXPRESSION_FUNCTIONS)})"
    if isinstance(exc, simpleeval.InvalidExpression):
        return str(exc).replace("Sorry, ", "").rstrip(". ")
    problem = f"{type(exc).__name__}: {exc}"
    if "NoneType" in problem:
        problem += " (number is None when the output has no number)"
    return problem


def _check_length(expression: str) -> None:
    if not expression.strip():
        raise CheckError("The expression is empty.")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CheckError(
            f"The expression is {len(expression)} characters long; at most "
            f"{MAX_EXPRESSION_CHARS} are allowed."
        )


def _score(expression: str, text: str) -> float:
    """The score, raising what the evaluation raised (``CheckError`` for a bad result)."""
    value = _evaluator(text).eval(expression.strip())
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        score = float(value)
        if math.isnan(score):
            raise CheckError(f"The expression {expression!r} gave NaN, not a score.")
        return score
    raise CheckError(
        f"The expression {expression!r} gave {type(value).__name__} {str(value)[:40]!r}; it must "
        "give true/false or a number."
    )


def expression_score(expression: str, text: str) -> float:
    """Evaluate the analyst's expression on one output: true -> 1.0, false -> 0.0, a number as is.

    Evaluated by ``simpleeval`` (no imports, no dunder or private attributes, bounded powers
    and string sizes) with the names of ``expression_names`` and the functions of
    ``EXPRESSION_FUNCTIONS``: ``len``, ``lower``, ``upper``, ``contains(a, b)`` (b in a,
    ignoring case), ``matches(pattern, text)`` (as ``regex_passes``), ``startswith``,
    ``endswith``, ``abs``, ``min``, ``max``, ``round``, ``int``, ``float``, ``str``, ``sum``,
    ``any``, ``all``. Any failure (syntax, unknown name, ``number > 3`` when there is no number)
    raises ``CheckError`` quoting the expression and the problem.
    """
    _check_length(expression)
    try:
        return _score(expression, text)
    except CheckError:
        raise
    except Exception as exc:
        raise CheckError(f"The expression {expression!r} failed: {_problem(exc)}.") from exc


def check_expression(expression: str) -> None:
    """Edit-time check: ``CheckError`` unless the expression can work.

    Syntax, unknown names, forbidden features and results that are no score are always errors;
    a runtime error (``lines[3]``, ``number > 3`` without a number) only if it happens on every
    one of ``SAMPLE_OUTPUTS``, since it may depend on the output.
    """
    _check_length(expression)
    failures: list[str] = []
    for sample in SAMPLE_OUTPUTS:
        try:
            _score(expression, sample)
        except CheckError:
            raise
        except _STATIC_PROBLEMS as exc:
            raise CheckError(f"The expression {expression!r} is invalid: {_problem(exc)}.") from exc
        except Exception as exc:
            failures.append(_problem(exc))
        else:
            return
    raise CheckError(
        f"The expression {expression!r} fails on every sample output, e.g. {failures[0]}."
    )


def check_selector(selector: SelectorConfig) -> None:
    """Edit-time validation of a best-of-N selector: ``CheckError`` saying what to fix.

    regex: the pattern compiles; json_schema: the schema is JSON and valid for its metaschema;
    expression: as ``check_expression``. A judge selector has nothing to check here.
    """
    if selector.kind == "regex":
        compile_pattern(selector.pattern or "")
    elif selector.kind == "json_schema":
        parse_schema(selector.json_schema or "")
    elif selector.kind == "expression":
        check_expression(selector.expression or "")


__all__ = [
    "EXPRESSION_FUNCTIONS",
    "REGEX_FLAGS",
    "CheckError",
    "answer_key",
    "check_expression",
    "check_selector",
    "compile_pattern",
    "expression_names",
    "expression_score",
    "extract_number",
    "find_json",
    "json_schema_passes",
    "normalise_text",
    "number_text",
    "parse_schema",
    "regex_passes",
]
