"""Units of the ranking signals in ``retrieve``."""

from __future__ import annotations

from sleepy_repo.retrieve import Chunk, file_evidence


def _chunk(i: int, path: str, score: float) -> Chunk:
    return Chunk(i, path, i, i, None, "x", True, score=score)


def test_a_file_scores_by_its_three_best_chunks() -> None:
    chunks = [  # best first, as bm25_chunks returns them
        _chunk(1, "one_strong.py", 9.0),
        _chunk(2, "many.py", 4.0),
        _chunk(3, "many.py", 3.5),
        _chunk(4, "two.py", 3.4),
        _chunk(5, "many.py", 3.0),
        _chunk(6, "two.py", 3.0),
        _chunk(7, "many.py", 2.9),  # a fourth chunk does not count
        _chunk(8, "many.py", 2.8),
    ]
    # many.py: 4 + 3.5 + 3 = 10.5; one_strong.py: 9; two.py: 6.4
    assert file_evidence(chunks) == ["many.py", "one_strong.py", "two.py"]
    assert file_evidence(chunks, top=1) == ["one_strong.py", "many.py", "two.py"]


def test_ties_keep_the_order_of_each_files_best_chunk() -> None:
    chunks = [_chunk(1, "b.py", 2.0), _chunk(2, "a.py", 2.0), _chunk(3, "c.py", 1.0)]
    assert file_evidence(chunks) == ["b.py", "a.py", "c.py"]
    assert file_evidence([]) == []
