"""The text-model contract (pyinfer.text.check_answers) and pyvlm's bounded queue, without a pipeline."""

from __future__ import annotations

import numpy as np
import pytest

from pyinfer.elements._async import Answered, AnswerStore, Request, RequestQueue
from pyinfer.errors import DecodeError
from pyinfer.text import Answer, check_answers


def test_strings_and_open_vocabulary_dicts_are_answers():
    got = check_answers(["a cat", {"boxes": [[0, 0, 2, 2]], "labels": ["cat"], "scores": [0.7]}], 2)
    assert got[0] == Answer("a cat")
    assert got[1].text == "cat" and got[1].labels == ("cat",)
    np.testing.assert_array_equal(got[1].boxes, [[0, 0, 2, 2]])
    np.testing.assert_allclose(got[1].scores, [0.7])


@pytest.mark.parametrize(
    ("out", "match"),
    [
        ("one caption", "returned str"),
        (None, "returned NoneType"),
        (["a"], "returned 1 answers for 2 images"),
        (["a", 3], "answer 1 of the text model is a int"),
        (["a", {"labels": ["x"]}], "without 'boxes' and 'labels'"),
        (["a", {"boxes": [[0, 0, 1, 1]], "labels": ["x", "y"]}], "1 boxes but 2 labels"),
        (["a", {"boxes": [[0, 0, 1]], "labels": ["x"]}], "'boxes' is not"),
        (["a", {"boxes": [[0, 0, 1, 1]], "labels": "x"}], "'labels' must be a list of str"),
    ],
)
def test_answers_breaking_the_contract_name_what_is_wrong(out, match):
    with pytest.raises(DecodeError, match=match):
        check_answers(out, 2)


def _req(i: int, n: int = 1) -> Request:
    return Request(i, None, [np.zeros((2, 2, 3), np.uint8)] * n)


def test_a_full_queue_drops_the_oldest_or_the_newest():
    q = RequestQueue(2, "oldest")
    for i in range(5):
        q.put(_req(i))
    assert [r.frame_no for r in q.take(10)] == [3, 4] and q.dropped == 3 and q.peak == 2
    q = RequestQueue(2, "newest")
    assert [q.put(_req(i)) for i in range(4)] == [True, True, False, False]
    assert [r.frame_no for r in q.take(10)] == [0, 1]


def test_a_model_call_takes_whole_requests_up_to_the_batch():
    q = RequestQueue(8)
    for i, n in enumerate([2, 1, 3, 1]):
        q.put(_req(i, n))
    assert [r.frame_no for r in q.take(3)] == [0, 1]
    assert [r.frame_no for r in q.take(3)] == [2]  # 3 images: alone
    assert [r.frame_no for r in q.take(1)] == [3]
    assert q.take(1, timeout_s=0.01) == []
    q.close()
    assert q.take(1) is None


def test_untracked_objects_find_their_answer_by_overlap():
    store = AnswerStore()
    store.update([Answered(Answer("red"), "", 3, None, (0, 0, 10, 10)), Answered(Answer("blue"), "", 3, None,
                  (50, 50, 60, 60), track_id=5)])  # fmt: skip
    boxes = np.array([[1, 0, 11, 10], [30, 30, 40, 40], [0, 0, 1, 1]], np.float32)
    got = store.for_objects(boxes, [None, 5, None])
    assert got[0] is not None and got[0].answer.text == "red"
    assert got[1] is not None and got[1].answer.text == "blue"  # by track id, wherever it moved
    assert got[2] is None  # overlaps too little
