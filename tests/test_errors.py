"""`vitcli.errors.first_line`: the one way an exception's message becomes part of a one-line error."""

from __future__ import annotations

from vitcli.errors import first_line


def test_first_line_of_a_message_that_runs_on():
    exc = RuntimeError("PytorchStreamReader failed reading zip archive: failed finding central directory. This is "
                       "an internal miniz error. If you are seeing this\nsecond line")
    assert first_line(exc) == ("PytorchStreamReader failed reading zip archive: failed finding central directory. "
                               "This is an internal miniz error. If you are seeing this")
    assert first_line(exc, sentence=True) == ("PytorchStreamReader failed reading zip archive: failed finding "
                                              "central directory")
    assert first_line(exc, sentence=True, limit=11) == "PytorchStre"


def test_first_line_of_an_empty_message_is_its_type_and_control_characters_are_shown_as_marks():
    assert first_line(KeyError()) == "KeyError" and first_line(ValueError("  \n ")) == "ValueError"
    assert first_line(ValueError("bad byte \x1b[31m here\nmore")) == "bad byte ?[31m here"
