from __future__ import annotations

from sleepy_repo.tokens import count_tokens


def test_counts_words_punctuation_and_long_identifiers() -> None:
    assert count_tokens("") == 0
    assert count_tokens("   \n\t") == 0
    assert count_tokens("hello world") == 2
    assert count_tokens("a.b(c)") == 6
    # identifiers split every 6 letters, digits every 3
    assert count_tokens("abcdefghijkl") == 2
    assert count_tokens("1234567") == 3
    assert count_tokens("naïve") == 3  # "na", "ï", "ve"


def test_is_additive_over_whitespace_joins() -> None:
    parts = ["def add(self, x):", "return self.total + x", "# comment"]
    assert count_tokens("\n".join(parts)) == sum(count_tokens(p) for p in parts)
