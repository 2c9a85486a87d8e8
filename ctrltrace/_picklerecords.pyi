# Type stub for the C module ctrltrace/_picklerecords.c: records as the journal's pickles.
from ctrltrace.records import Record, Stage

def dumps(record: Record, /) -> bytes: ...
def seal(
    records: list[Record], health: frozenset[Stage], /
) -> tuple[bytes, float, float, set[str], list[int]]: ...
