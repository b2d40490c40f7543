"""The strict HuJSON reader: JSON plus comments and trailing commas, and nothing more."""

from __future__ import annotations

import pytest

from tests.sim.control import hujson


def test_comments_and_trailing_commas_are_accepted() -> None:
    """Line and block comments and trailing commas in arrays and objects are HuJSON."""
    text = '// head\n{"a": [1, 2, /* two */], /* x */ "b": {"c": "d",},}\n// tail'
    assert hujson.loads(text) == {"a": [1, 2], "b": {"c": "d"}}


def test_comment_markers_inside_strings_are_data() -> None:
    """`//`, `/*` and commas inside strings are kept, escaped quotes included."""
    text = '{"url": "http://x/*y*/", "q": "say \\"hi\\" // not a comment", "c": ",]"}'
    assert hujson.loads(text) == {
        "url": "http://x/*y*/",
        "q": 'say "hi" // not a comment',
        "c": ",]",
    }


def test_a_trailing_comma_before_a_comment_is_accepted() -> None:
    """A comment between the trailing comma and the bracket does not matter."""
    assert hujson.loads("[1, // one\n]") == [1]


@pytest.mark.parametrize(
    "text",
    [
        "{'a': 1}",  # single quotes
        "{a: 1}",  # unquoted key
        "[,]",  # a comma with no value before it
        "[1,,]",  # two commas
        '{"a":,}',  # a missing value
        "[NaN]",  # not JSON
        "[Infinity]",  # not JSON
        "[0x10]",  # hex numbers are JSON5, not HuJSON
        "/* unterminated",
        "# hash comment\n{}",
        "",
        "{} {}",
    ],
)
def test_anything_beyond_hujson_is_refused(text: str) -> None:
    """JSON5-isms and other extensions are refused."""
    with pytest.raises(hujson.HuJSONError):
        hujson.loads(text)


def test_errors_name_line_and_column() -> None:
    """A syntax error names its position in the original text, comments counted."""
    with pytest.raises(hujson.HuJSONError, match="line 3 column 3"):
        hujson.loads("{\n  // c\n  x: 1}")
