from __future__ import annotations

import sleepy_repo


def test_public_api_is_exported_and_sorted() -> None:
    assert sleepy_repo.__all__ == sorted(sleepy_repo.__all__)
    for name in sleepy_repo.__all__:
        assert hasattr(sleepy_repo, name), name
