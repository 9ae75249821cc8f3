"""PartPlan properties: parts tile the input, obey every fileUploadParameters limit."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from ua.api.errors import FileTooLarge
from ua.upload.planning import PartPlan, UploadParameters

MiB = 1024 * 1024
AWS = UploadParameters()
AZURE = UploadParameters(1, 4 * MiB, 209715200000, 50000, False)

params_st = st.builds(
    lambda mn, extra, nparts, maxfile, empty: UploadParameters(
        mn, mn + extra, maxfile, nparts, empty),
    st.integers(1, 10 * MiB), st.integers(0, 100 * MiB), st.integers(1, 20000),
    st.integers(0, 10 ** 15), st.booleans())


@settings(max_examples=400, deadline=None)
@given(size=st.integers(0, 10 ** 13), chunk=st.integers(1, 200 * MiB), params=params_st,
       compressed=st.booleans())
def test_plan_properties(size, chunk, params, compressed):
    try:
        plan = PartPlan.for_size(size, chunk, params, compressed=compressed)
    except FileTooLarge:
        too_big_file = not compressed and size > params.maximum_file_size
        too_many_parts = size > params.maximum_num_parts * params.max_raw_part_size(compressed)
        assert too_big_file or too_many_parts
        return
    if size == 0:
        assert plan.num_parts == (1 if params.empty_last_part_allowed else 0)
        if plan.num_parts:
            assert plan.part(1) == (0, 0)
        return
    assert 1 <= plan.num_parts <= params.maximum_num_parts
    assert plan.part_size <= params.max_raw_part_size(compressed) <= params.maximum_part_size
    first_off, _ = plan.part(1)
    last_off, last_len = plan.part(plan.num_parts)
    assert first_off == 0 and last_off + last_len == size and last_len >= 1
    # every non-last part is full-sized and meets the minimum (raw bytes)
    if plan.num_parts > 1:
        assert plan.part_size >= params.minimum_part_size or plan.part_size == \
            params.max_raw_part_size(compressed)
        assert plan.part(plan.num_parts - 1)[1] == plan.part_size
    # no larger part than needed: the requested chunk is honoured unless limits force growth
    if plan.part_size > max(chunk, params.minimum_part_size):
        assert -(-size // max(chunk, params.minimum_part_size)) > params.maximum_num_parts


def test_tiling_small():
    plan = PartPlan.for_size(12 * MiB, 5 * MiB, AWS)
    assert list(plan) == [(1, 0, 5 * MiB), (2, 5 * MiB, 5 * MiB), (3, 10 * MiB, 2 * MiB)]


def test_huge_file_grows_part_size():
    size = 52 * 1024 * MiB
    plan = PartPlan.for_size(size, 5 * MiB, AWS)
    assert plan.num_parts == 10000 and plan.part_size == -(-size // 10000)


def test_max_file_size_clear_error():
    with pytest.raises(FileTooLarge, match="maximum file size"):
        PartPlan.for_size(AZURE.maximum_file_size + 1, 75 * MiB, AZURE)


def test_chunk_is_capped_by_max_part_size():
    plan = PartPlan.for_size(100 * MiB, 75 * MiB, AZURE)
    assert plan.part_size == 4 * MiB and plan.num_parts == 25
    compressed = PartPlan.for_size(100 * MiB, 75 * MiB, AZURE, compressed=True)
    assert compressed.part_size < 4 * MiB


def test_empty_file():
    assert PartPlan.for_size(0, 5 * MiB, AWS).num_parts == 1
    assert PartPlan.for_size(0, 5 * MiB, AZURE).num_parts == 0


def test_from_api_requires_all_keys():
    d = {"minimumPartSize": 5, "maximumPartSize": 10, "maximumFileSize": 100,
         "maximumNumParts": 3, "emptyLastPartAllowed": True}
    assert UploadParameters.from_api(d) == UploadParameters(5, 10, 100, 3, True)
    with pytest.raises(KeyError):
        UploadParameters.from_api({"minimumPartSize": 5})
