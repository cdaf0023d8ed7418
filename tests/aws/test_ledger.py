"""The DynamoDB ledger against moto's server: claims, leases, completion exactly once."""

from __future__ import annotations

import pytest

from logwatchd.aws.ledger import CatalogFile, DynamoLedger, LeaseLost

from .conftest import AwsEnv

SHA = "a" * 64


def test_claim_is_exclusive_until_the_lease_ends(aws: AwsEnv) -> None:
    ledger = DynamoLedger(aws.table)
    first = ledger.claim(SHA, key="k", bucket="b", owner="one", lease_seconds=60, now=1000)
    assert first.state == "claimed" and first.batches_done == 0
    busy = ledger.claim(SHA, key="k", bucket="b", owner="two", lease_seconds=60, now=1010)
    assert busy.state == "busy" and busy.lease_until == pytest.approx(1060)
    # The lease ran out: another invocation takes it over, and the first one's completion fails.
    taken = ledger.claim(SHA, key="k", bucket="b", owner="two", lease_seconds=60, now=1061)
    assert taken.state == "claimed"
    with pytest.raises(LeaseLost):
        ledger.complete(SHA, owner="one", outcome="ok", summary={"processed": 1})
    ledger.complete(SHA, owner="two", outcome="ok", summary={"processed": 1, "valid": 1})
    done = ledger.claim(SHA, key="k", bucket="b", owner="three", lease_seconds=60, now=5000)
    assert done.state == "done" and done.outcome == "ok"


def test_released_lease_is_taken_at_once(aws: AwsEnv) -> None:
    ledger = DynamoLedger(aws.table)
    ledger.claim(SHA, key="k", bucket="b", owner="one", lease_seconds=600, now=1000)
    ledger.release(SHA, "one")
    assert ledger.claim(SHA, key="k", bucket="b", owner="two", lease_seconds=60, now=1001).state == "claimed"


def test_completion_across_many_transactions_adds_every_count_once(aws: AwsEnv) -> None:
    """A file spanning months: its dates need several transactions; a completion that died after
    some of them is resumed where it stopped, and nothing is added twice."""
    ledger = DynamoLedger(aws.table)
    days = [f"{2000 + i // 365:04d}-{1 + (i % 365) // 31:02d}-{1 + i % 28:02d}" for i in range(120)]
    days = sorted(set(days))
    files = [CatalogFile(d, f"date={d}/{SHA}-0.parquet", 3, 100, SHA) for d in days]
    counts = {(d, "login"): 2 for d in days} | {(d, "view"): 1 for d in days}
    claim = ledger.claim(SHA, key="k", bucket="b", owner="one", lease_seconds=60, now=1000)

    class Boom(Exception):
        pass

    real = ledger.client.transact_write_items
    calls = [0]

    def dying(**kwargs: object) -> object:
        calls[0] += 1
        if calls[0] == 3:
            raise Boom("timed out")
        return real(**kwargs)

    ledger.client.transact_write_items = dying
    with pytest.raises(Boom):
        ledger.complete(SHA, owner="one", outcome="ok", summary={"processed": 9}, files=files,
                        counts=counts, start_batch=claim.batches_done)
    ledger.client.transact_write_items = real
    again = ledger.claim(SHA, key="k", bucket="b", owner="two", lease_seconds=60, now=2000)
    assert again.state == "claimed" and again.batches_done == 2
    ledger.complete(SHA, owner="two", outcome="ok", summary={"processed": 9}, files=files,
                    counts=counts, start_batch=again.batches_done)
    for d in days:
        assert ledger.counts(d) == {"login": 2, "view": 1}
    assert ledger.count(days[0], "login") == 2 and ledger.count(days[0], "nope") == 0
    assert ledger.partitions() == {d: 1 for d in days}
    assert ledger.live_files(days[5]) == [files[5]]
    assert ledger.claim(SHA, key="k", bucket="b", owner="x", lease_seconds=1, now=3000).state == "done"


def test_any_action_is_counted_exactly(aws: AwsEnv) -> None:
    """Actions are any non-empty string: longer than a sort key may be, reserved words,
    thousands of them on one date."""
    ledger = DynamoLedger(aws.table)
    long = "x" * 5000
    huge = "y" * (70 << 10)
    many = {("2026-01-01", f"act-{i}"): i + 1 for i in range(250)}
    counts = {**many, ("2026-01-01", long): 3, ("2026-01-01", huge): 4,
              ("2026-01-01", "status"): 5, ("2026-01-01", "löschen ☃"): 6}
    ledger.claim(SHA, key="k", bucket="b", owner="one", lease_seconds=60, now=1000)
    ledger.complete(SHA, owner="one", outcome="ok", summary={}, counts=counts)
    assert ledger.count("2026-01-01", long) == 3
    assert ledger.count("2026-01-01", huge) == 4
    assert ledger.count("2026-01-01", "status") == 5
    assert ledger.count("2026-01-01", "löschen ☃") == 6
    assert ledger.count("2026-01-01", "act-249") == 250
    listed = ledger.counts("2026-01-01")
    assert len(listed) == 254 and listed[long] == 3 and listed["act-0"] == 1
    [hashed] = [k for k in listed if k.startswith("sha256:")]
    assert listed[hashed] == 4


def test_a_completion_whose_reply_was_lost_is_not_taken_for_a_lost_lease(aws: AwsEnv) -> None:
    """The transaction applied, its reply timed out: the retry is refused by the progress
    condition, which must read as "done", not as another invocation's takeover."""
    from botocore.exceptions import ReadTimeoutError

    ledger = DynamoLedger(aws.table)
    ledger.claim(SHA, key="k", bucket="b", owner="one", lease_seconds=60)
    real = ledger.client.transact_write_items
    lost = [0]

    def reply_lost(**kwargs: object) -> object:
        out = real(**kwargs)
        if not lost[0]:
            lost[0] += 1
            raise ReadTimeoutError(endpoint_url="http://dynamodb")
        return out

    ledger.client.transact_write_items = reply_lost
    ledger.complete(SHA, owner="one", outcome="ok", summary={"processed": 2},
                    counts={("2026-01-01", "login"): 2})
    assert lost[0] == 1
    assert ledger.count("2026-01-01", "login") == 2
    assert ledger.claim(SHA, key="k", bucket="b", owner="two", lease_seconds=1).state == "done"
