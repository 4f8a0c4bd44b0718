"""Prediction ids: a request id and a row index, recovered from the id alone; a request's ids sort together."""

from __future__ import annotations

from service.groundtruth.ids import new_prediction_ids, prediction_id_range, prediction_ids, split_prediction_id


class TestPredictionIds:
    """Each id names its request and its row; ids that are not ours are refused."""

    def test_split_prediction_id(self) -> None:
        request_id, ids = new_prediction_ids(3)
        assert [split_prediction_id(pid) for pid in ids] == [(request_id, 0), (request_id, 1), (request_id, 2)]
        assert split_prediction_id("g" * 32) is None and split_prediction_id("0" * 31) is None

    def test_a_request_has_its_own_ids_however_many_rows(self) -> None:
        first, first_ids = new_prediction_ids(5)
        second, second_ids = new_prediction_ids(3000)  # more rows than any request before it
        assert first != second and len(first) == 24
        assert prediction_ids(first, 5) == first_ids and prediction_ids(second, 3000) == second_ids
        assert len(set(second_ids)) == 3000 and split_prediction_id(second_ids[-1]) == (second, 2999)


class TestPredictionIdRange:
    """The range of a request's ids holds every one of them and none of another request's."""

    def test_range_bounds_exactly_the_requests_ids(self) -> None:
        request_id, ids = new_prediction_ids(3)
        low, high = prediction_id_range(request_id)
        last = request_id + f"{0xFFFFFFFF:08x}"  # the highest row index an id can carry
        assert all(low <= pid <= high for pid in [*ids, last])
        for _ in range(100):
            _, other_ids = new_prediction_ids(2)
            assert not any(low <= pid <= high for pid in other_ids)
