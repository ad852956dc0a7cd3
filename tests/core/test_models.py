"""JobSpec's wire form (mgpu_core.models): what dataclasses.asdict gives, without its cost."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from mgpu_core.models import JobSpec

TEXT = st.text(max_size=8)


@given(
    spec=st.builds(
        JobSpec,
        name=TEXT,
        argv=st.lists(TEXT, max_size=3),
        script=st.none() | TEXT,
        gpus=st.integers(0, 8),
        nodelist=st.lists(TEXT, max_size=2),
        env=st.dictionaries(TEXT, TEXT, max_size=3),
        stdout_path=st.none() | TEXT,
        begin_time=st.floats(0, 1e10),
    )
)
def test_to_wire_is_asdict_with_its_own_containers(spec: JobSpec) -> None:
    wire = spec.to_wire()
    assert wire == dataclasses.asdict(spec)
    assert list(wire) == [f.name for f in dataclasses.fields(JobSpec)]
    assert wire["argv"] is not spec.argv and wire["env"] is not spec.env
    assert wire["nodelist"] is not spec.nodelist
    assert JobSpec.from_wire(wire) == spec
