"""The DynamoDB ledger: the Lambda functions' record of inputs, counts and live files.

One table (its one deployed definition is `aws/template.yaml`; `create_table` makes the same
for tests and the demo), key `pk` (hash) + `sk` (range), on-demand billing. Items:

    pk                      sk          attributes
    input#<sha256>          input       status (in_progress | completed), outcome (ok |
                                        quarantined), owner, lease_until (epoch s),
                                        batches_done, key, bucket, attempts, processed,
                                        valid, errors, first_seen, completed_at
    counts#<YYYY-MM-DD>     a:<action>  n: valid rows of that action on that date, action:
                                        the action's text (an action over SHORT_ACTION_BYTES
                                        has sk h:<sha256 of it>; over MAX_ACTION_TEXT_BYTES its
                                        text is listed as "sha256:<hex>")
    files#<YYYY-MM-DD>      <rel key>   one live clean file (key relative to the clean URI,
                                        "date=…/<name>.parquet"): rows, bytes, and
                                        input_sha256, or inputs (a merged file's)
    partitions              <date>      files: live clean files of that date; compacting
                                        (epoch s), sweeps: compact.py's (see there)
    compaction#<date>       journal     a compaction's pending publish (compact.py)
    meta                    timezone    zone: the time zone of the dataset's dates and counts

Exactly once under at-least-once delivery: `claim` is a conditional write (the first
invocation holds a lease tied to its remaining time; a second one sees `busy`, or `done`
once the first completed); `complete` writes the catalog entries and adds the counts in
transactions that each also advance the input's `batches_done` under the condition that
the claimant still holds it and no other transaction has advanced it — so each addition
lands exactly once even when a file's dates need several transactions (at most 100
actions each), and an invocation that timed out half-way is resumed, not repeated, by the
next one. The last transaction marks the input completed.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

INPUT_SK = "input"
PARTITIONS_PK = "partitions"
# A sort key holds at most 1,024 bytes and an item 400 KB; actions are any non-empty string.
SHORT_ACTION_BYTES = 1000
MAX_ACTION_TEXT_BYTES = 64 << 10
# TransactWriteItems takes at most 100 actions; one of them is the input's own update.
ACTIONS_PER_TRANSACTION = 99
# A completion transaction refused for a conflict (or without a reply) is tried this many times more.
CONFLICT_RETRIES = 5


META_PK = "meta"


class ZoneMismatch(ValueError):
    """The table's dataset is in another time zone than LOGWATCHD_TIMEZONE says."""


class LeaseLost(Exception):
    """Another invocation took this input over (our lease expired): stop, write nothing more."""


@dataclass(frozen=True)
class Claim:
    state: str                 # claimed (ours to process) | done (completed before) | busy
    batches_done: int = 0      # claimed: completion transactions already applied (resume there)
    outcome: str | None = None           # done: ok | quarantined
    lease_until: float | None = None     # busy: when the holder's lease ends
    first_seen: float | None = None      # claimed: when the input was first claimed (epoch s),
                                         # the same for every retry: its processing date


@dataclass(frozen=True)
class CatalogFile:
    """One live clean file; `key` is relative to the clean URI ("date=…/name.parquet")."""

    date: str
    key: str
    rows: int
    bytes: int
    input_sha256: str | None = None            # an ingested file's input
    inputs: tuple[str, ...] = field(default=())  # a merged file's inputs


def create_table(name: str, client: Any = None) -> None:
    """The table as `aws/template.yaml` defines it (for tests and the demo); waits until active."""
    client = client or new_client()
    client.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                   {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "S"}])
    client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1})


def new_client() -> Any:
    import boto3
    from botocore.config import Config as BotoConfig

    # `standard` retries throttling and transient errors with backoff (AWS_ENDPOINT_URL is
    # honoured by boto3 itself).
    return boto3.client("dynamodb", config=BotoConfig(retries={"mode": "standard", "max_attempts": 5}))


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: float) -> dict[str, str]:
    return {"N": str(value)}


def _num(item: dict[str, Any], name: str, default: float = 0) -> float:
    raw = item.get(name)
    if raw is None:
        return default
    text = raw["N"]
    return int(text) if text.lstrip("-").isdigit() else float(text)


def _str(item: dict[str, Any], name: str) -> str | None:
    raw = item.get(name)
    return None if raw is None else raw["S"]


class DynamoLedger:
    """Reads and writes the ledger table through the low-level DynamoDB client."""

    def __init__(self, table: str, client: Any = None) -> None:
        self.table = table
        self.client = client or new_client()

    # --- inputs -------------------------------------------------------------------------
    def claim(self, sha256: str, *, key: str, bucket: str, owner: str, lease_seconds: float,
              now: float | None = None) -> Claim:
        """Takes the input for `owner` for `lease_seconds`, unless it is completed or another
        invocation's lease still runs."""
        now = time.time() if now is None else now
        try:
            out = self.client.update_item(
                TableName=self.table, Key=self._input_key(sha256),
                UpdateExpression=("SET #st = :prog, #owner = :me, #lease = :until, #key = :key, "
                                  "#bucket = :bucket, #first = if_not_exists(#first, :now), "
                                  "#done = if_not_exists(#done, :zero) ADD #attempts :one"),
                ConditionExpression=("attribute_not_exists(pk) OR "
                                     "(#st = :prog AND (#lease < :now OR #owner = :me))"),
                ExpressionAttributeNames={"#st": "status", "#owner": "owner", "#key": "key",
                                          "#lease": "lease_until", "#bucket": "bucket",
                                          "#first": "first_seen", "#done": "batches_done",
                                          "#attempts": "attempts"},
                ExpressionAttributeValues={
                    ":prog": _s("in_progress"), ":me": _s(owner), ":until": _n(round(now + lease_seconds, 3)),
                    ":key": _s(key), ":bucket": _s(bucket), ":now": _n(round(now, 3)),
                    ":zero": _n(0), ":one": _n(1)},
                ReturnValues="ALL_NEW")
        except self.client.exceptions.ConditionalCheckFailedException:
            item = self.input(sha256)
            if item is None:  # deleted in between: not ours to guess about; try again later
                return Claim("busy", lease_until=now)
            if _str(item, "status") == "completed":
                return Claim("done", outcome=_str(item, "outcome"))
            return Claim("busy", lease_until=_num(item, "lease_until"))
        attrs = out["Attributes"]
        return Claim("claimed", batches_done=int(_num(attrs, "batches_done")),
                     first_seen=float(_num(attrs, "first_seen", now)))

    def input(self, sha256: str) -> dict[str, Any] | None:
        """The input's item as DynamoDB returns it (typed attribute values), or None."""
        got = self.client.get_item(TableName=self.table, Key=self._input_key(sha256),
                                   ConsistentRead=True)
        return got.get("Item")

    def release(self, sha256: str, owner: str) -> None:
        """Ends our lease early (the invocation failed): the next delivery may take it at once."""
        try:
            self.client.update_item(
                TableName=self.table, Key=self._input_key(sha256),
                UpdateExpression="SET #lease = :zero",
                ConditionExpression="#owner = :me AND #st = :prog",
                ExpressionAttributeNames={"#owner": "owner", "#st": "status", "#lease": "lease_until"},
                ExpressionAttributeValues={":zero": _n(0), ":me": _s(owner), ":prog": _s("in_progress")})
        except self.client.exceptions.ConditionalCheckFailedException:
            pass  # taken over or completed meanwhile: nothing of ours to release

    def complete(self, sha256: str, *, owner: str, outcome: str, summary: dict[str, int],
                 files: Iterable[CatalogFile] = (), counts: dict[tuple[str, str], int] | None = None,
                 start_batch: int = 0, now: float | None = None) -> None:
        """Registers the outputs, adds the counts and marks the input completed, each
        addition exactly once (see the module's docstring). Raises LeaseLost."""
        now = time.time() if now is None else now
        batches = list(_chunks(self._completion_actions(files, counts or {}), ACTIONS_PER_TRANSACTION))
        if not batches:
            batches = [[]]
        if start_batch >= len(batches):
            # The last batch completes the input, so a claimed input has one left to apply:
            # the batches were cut differently (another version of this code started it).
            raise RuntimeError(f"input {sha256}: {start_batch} completion batches applied of "
                               f"{len(batches)}; its outputs are cut differently now")
        for i in range(start_batch, len(batches)):
            last = i == len(batches) - 1
            names = {"#owner": "owner", "#st": "status", "#done": "batches_done"}
            values: dict[str, Any] = {":me": _s(owner), ":prog": _s("in_progress"),
                                      ":i": _n(i), ":next": _n(i + 1)}
            update = "SET #done = :next"
            if last:
                update += (", #st = :completed, #outcome = :outcome, #at = :now, "
                           "#processed = :processed, #valid = :valid, #errors = :errors "
                           "REMOVE #lease")
                names.update({"#outcome": "outcome", "#at": "completed_at", "#processed": "processed",
                              "#valid": "valid", "#errors": "errors", "#lease": "lease_until"})
                values.update({":completed": _s("completed"), ":outcome": _s(outcome), ":now": _n(round(now, 3)),
                               ":processed": _n(summary.get("processed", 0)),
                               ":valid": _n(summary.get("valid", 0)),
                               ":errors": _n(summary.get("errors", 0))})
            own = {"Update": {
                "TableName": self.table, "Key": self._input_key(sha256), "UpdateExpression": update,
                "ConditionExpression": "#owner = :me AND #st = :prog AND #done = :i",
                "ExpressionAttributeNames": names, "ExpressionAttributeValues": values}}
            self._apply_batch(sha256, owner, i, [own, *batches[i]])

    def _apply_batch(self, sha256: str, owner: str, i: int, actions: list[dict[str, Any]]) -> None:
        """One completion transaction. A conflict with a concurrent transaction on a shared
        item (a compaction's on a date's files count) is tried again; a refusal after an
        attempt whose reply was lost is recognised by the input's progress, not taken for a
        lost lease."""
        retryable: tuple[type[BaseException], ...] = (OSError, *self._retryable_errors())
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                self.client.transact_write_items(TransactItems=actions)
                return
            except self.client.exceptions.TransactionCanceledException as exc:
                codes = [r.get("Code") for r in exc.response.get("CancellationReasons") or []]
                if codes and codes[0] == "ConditionalCheckFailed":
                    item = self.input(sha256) or {}
                    if _str(item, "owner") == owner and _num(item, "batches_done") > i:
                        return  # applied by an earlier attempt whose reply was lost
                    raise LeaseLost(f"input {sha256}: taken over by another invocation") from None
                if "TransactionConflict" not in codes or attempt == CONFLICT_RETRIES:
                    raise
            except retryable:
                if attempt == CONFLICT_RETRIES:
                    raise
            time.sleep(min(0.05 * 2 ** attempt, 1.0))

    @staticmethod
    def _retryable_errors() -> tuple[type[BaseException], ...]:
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import ReadTimeoutError

        return (BotoConnectionError, ReadTimeoutError)

    def _completion_actions(self, files: Iterable[CatalogFile],
                            counts: dict[tuple[str, str], int]) -> Iterator[dict[str, Any]]:
        """The catalog puts and count additions of one input, in a deterministic order (a
        resumed completion must cut the same batches)."""
        per_date: dict[str, int] = {}
        for f in sorted(files, key=lambda f: f.key):
            yield {"Put": {"TableName": self.table, "Item": self.file_item(f)}}
            per_date[f.date] = per_date.get(f.date, 0) + 1
        for day, n in sorted(per_date.items()):
            yield self.partition_add(day, n)
        for (day, action), n in sorted(counts.items()):
            if n:
                yield {"Update": {
                    "TableName": self.table, "Key": _count_key(day, action),
                    "UpdateExpression": "ADD #n :n SET #action = :action",
                    "ExpressionAttributeNames": {"#n": "n", "#action": "action"},
                    "ExpressionAttributeValues": {":n": _n(n), ":action": _s(_action_text(action))}}}

    # --- counts -------------------------------------------------------------------------
    def counts(self, day: str) -> dict[str, int]:
        """Valid rows per action on `day` (the daemon's `Ledger.counts`)."""
        return {_str(item, "action") or "": int(_num(item, "n"))
                for item in self._query(f"counts#{day}")}

    def count(self, day: str, action: str) -> int:
        got = self.client.get_item(TableName=self.table, ConsistentRead=True,
                                   Key=_count_key(day, action), ProjectionExpression="#n",
                                   ExpressionAttributeNames={"#n": "n"})
        return int(_num(got.get("Item") or {}, "n"))

    # --- the catalog of live clean files ------------------------------------------------
    def file_item(self, f: CatalogFile) -> dict[str, Any]:
        item: dict[str, Any] = {"pk": _s(f"files#{f.date}"), "sk": _s(f.key),
                                "rows": _n(f.rows), "bytes": _n(f.bytes)}
        if f.input_sha256:
            item["input_sha256"] = _s(f.input_sha256)
        if f.inputs:
            item["inputs"] = {"SS": sorted(set(f.inputs))}
        return item

    def partition_add(self, day: str, n: int) -> dict[str, Any]:
        """The transaction action adding `n` (may be negative) to a date's live files."""
        return {"Update": {"TableName": self.table, "Key": {"pk": _s(PARTITIONS_PK), "sk": _s(day)},
                           "UpdateExpression": "ADD #files :n",
                           "ExpressionAttributeNames": {"#files": "files"},
                           "ExpressionAttributeValues": {":n": _n(n)}}}

    def partitions(self) -> dict[str, int]:
        """Live clean files per date."""
        return {_str(item, "sk") or "": int(_num(item, "files"))
                for item in self._query(PARTITIONS_PK)}

    def partition_items(self) -> dict[str, dict[str, Any]]:
        """Each date's partition item as DynamoDB returns it (`files`, and compact.py's mark)."""
        return {_str(item, "sk") or "": item for item in self._query(PARTITIONS_PK)}

    def live_files(self, day: str) -> list[CatalogFile]:
        """The catalog of one date's live clean files, by key."""
        out = []
        for item in self._query(f"files#{day}"):
            inputs = tuple(item["inputs"]["SS"]) if "inputs" in item else ()
            out.append(CatalogFile(day, _str(item, "sk") or "", int(_num(item, "rows")),
                                   int(_num(item, "bytes")), _str(item, "input_sha256"), inputs))
        return out

    def completed(self, shas: Iterable[str]) -> set[str]:
        """Those of these inputs whose completion is done. A file of an input still in
        progress may be written again by the invocation that resumes it, so compaction
        leaves it alone until then."""
        wanted = sorted(set(shas))
        done: set[str] = set()
        for batch in _chunks(wanted, 100):  # BatchGetItem takes at most 100 keys
            request: dict[str, Any] = {self.table: {
                "Keys": [self._input_key(sha) for sha in batch], "ConsistentRead": True,
                "ProjectionExpression": "pk, #st", "ExpressionAttributeNames": {"#st": "status"}}}
            for attempt in range(8):
                got = self.client.batch_get_item(RequestItems=request)
                for item in got.get("Responses", {}).get(self.table, []):
                    if _str(item, "status") == "completed":
                        done.add((_str(item, "pk") or "").removeprefix("input#"))
                request = got.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(min(0.05 * 2 ** attempt, 2.0))
            else:
                raise RuntimeError("DynamoDB left keys unprocessed after 8 attempts")
        return done

    def check_zone(self, zone: str, record: bool = True) -> None:
        """Records the time zone the dataset's dates and counts are in, at the first use of
        the table (`record`; the API, which only reads, checks only); refuses another one
        (the same instant would fall on other dates)."""
        key = {"pk": _s(META_PK), "sk": _s("timezone")}
        if record:
            try:
                self.client.put_item(TableName=self.table, Item={**key, "zone": _s(zone)},
                                     ConditionExpression="attribute_not_exists(pk) OR #zone = :zone",
                                     ExpressionAttributeNames={"#zone": "zone"},
                                     ExpressionAttributeValues={":zone": _s(zone)})
                return
            except self.client.exceptions.ConditionalCheckFailedException:
                pass  # another zone is recorded: read it for the message
        got = self.client.get_item(TableName=self.table, Key=key, ConsistentRead=True)
        recorded = _str(got.get("Item") or {}, "zone")
        if recorded not in (None, zone):
            raise ZoneMismatch(
                f"LOGWATCHD_TIMEZONE: {zone!r}, but the ledger table {self.table} and its dataset "
                f"are in {recorded!r}: dates and counts would mix two zones. Set it back to "
                f"{recorded!r}, or deploy a new table and output prefixes in {zone!r} and put the "
                "inputs through again")

    def transact(self, actions: list[dict[str, Any]]) -> None:
        """One TransactWriteItems (at most 100 actions)."""
        assert 0 < len(actions) <= ACTIONS_PER_TRANSACTION + 1, len(actions)
        self.client.transact_write_items(TransactItems=actions)

    def _query(self, pk: str) -> Iterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True,
                                  "KeyConditionExpression": "pk = :pk",
                                  "ExpressionAttributeValues": {":pk": _s(pk)}}
        while True:
            page = self.client.query(**kwargs)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    @staticmethod
    def _input_key(sha256: str) -> dict[str, Any]:
        return {"pk": _s(f"input#{sha256}"), "sk": _s(INPUT_SK)}


def _count_key(day: str, action: str) -> dict[str, Any]:
    raw = action.encode("utf-8", "surrogatepass")
    sk = f"a:{action}" if len(raw) <= SHORT_ACTION_BYTES else f"h:{hashlib.sha256(raw).hexdigest()}"
    return {"pk": _s(f"counts#{day}"), "sk": _s(sk)}


def _action_text(action: str) -> str:
    raw = action.encode("utf-8", "surrogatepass")
    return action if len(raw) <= MAX_ACTION_TEXT_BYTES else f"sha256:{hashlib.sha256(raw).hexdigest()}"


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
