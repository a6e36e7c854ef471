"""resume.plan, the resume rules, as a table: (shards on record, how many are intact on disk, the
manifest's complete / max_tokens, this run's --max-tokens) -> what the run does."""
import pytest

from tokshards.positions import End, Position
from tokshards.resume import DONE, ERROR, RUN, plan
from tokshards.shards import make_entry

S = 100  # shard size


def shards(*sizes):
    """Entries of shards with these token counts; a full one records where its successor starts."""
    return [make_entry("p", "bin", i, n, 1, 2 * n, "0" * 64, None, {"x"}, End(Position(0, i), n) if n == S else None)
            for i, n in enumerate(sizes)]


FULL3 = (S, S, S)
CASES = [
    # name,                                   sizes,          intact, complete, recorded_max, max_tokens -> action, keep, drop, start
    ("fresh manifest, nothing written",       (),             0, False, None, None,   RUN, 0, (), None),
    ("crashed after 3 full shards",           FULL3,          3, False, None, None,   RUN, 3, (), 2),
    ("complete run: nothing to do",           FULL3 + (40,),  4, True,  None, None,   DONE, 4, (), None),
    ("complete, --max-tokens larger: done",   FULL3 + (40,),  4, True,  None, 10**6,  DONE, 4, (), None),
    ("complete, same --max-tokens: done",     FULL3 + (40,),  4, True,  340,  340,    DONE, 4, (), None),
    ("complete, smaller --max-tokens",        FULL3 + (40,),  4, True,  None, 200,    ERROR, 0, (), None),
    ("--max-tokens run extended to the end",  FULL3 + (40,),  4, True,  340,  None,   RUN, 3, (3,), 2),
    ("--max-tokens run extended further",     FULL3 + (40,),  4, True,  340,  500,    RUN, 3, (3,), 2),
    ("kept shards exceed the new maximum",    FULL3 + (40,),  4, False, None, 250,    ERROR, 0, (), None),
    ("short shard mid-run is rewritten",      FULL3 + (40,),  4, False, None, None,   RUN, 3, (3,), 2),
    ("shard 1 missing on disk",               FULL3 + (40,),  1, True,  None, None,   RUN, 1, (1, 2, 3), 0),
    ("shard 0 missing: from the start",       FULL3,          0, True,  None, None,   RUN, 0, (0, 1, 2), None),
    ("last full shard bad, complete run",     FULL3,          2, True,  None, None,   RUN, 2, (2,), 1),
    ("manifest copied, no shards on disk",    FULL3 + (40,),  0, True,  None, None,   RUN, 0, (0, 1, 2, 3), None),
]


@pytest.mark.parametrize("name,sizes,intact,complete,recorded,max_tokens,action,keep,drop,start", CASES,
                         ids=[c[0] for c in CASES])
def test_plan(name, sizes, intact, complete, recorded, max_tokens, action, keep, drop, start):
    entries = shards(*sizes)
    p = plan(entries, intact, complete, recorded, S, max_tokens)
    assert p.action == action, p
    if action == ERROR:
        assert "--overwrite" in p.message and "--max-tokens" in p.message
        return
    assert (p.keep, p.drop) == (keep, drop), p
    assert p.start == (None if start is None else entries[start].end), p
    if action == RUN and intact < len(sizes):
        assert p.message.startswith(f"redoing from shard {keep}"), p.message


def test_a_full_shard_without_an_end_is_not_kept():
    """A full shard must say where its successor starts, or nothing after it can be resumed."""
    entries = shards(S, S, S)
    entries[1] = make_entry("p", "bin", 1, S, 1, 2 * S, "0" * 64, None, {"x"}, None)
    p = plan(entries, 3, False, None, S, None)
    assert (p.action, p.keep, p.drop, p.start) == (RUN, 1, (1, 2), entries[0].end)
