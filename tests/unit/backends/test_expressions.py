"""The DynamoDB expression builder both DynamoDB stores use, and the requests the lease store builds with it.

No server: the builder is pure, and the lease store's requests are captured by a fake client, resolved
(placeholders replaced by the names and values they stand for) and compared with KCL's conditions
(kcl-protocol.md §2.3).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardwise.backends.aws.expressions import Expression, from_attribute_value, to_attribute_value
from shardwise.backends.aws.lease_items import lease_to_item
from shardwise.backends.aws.lease_table import DynamoDBLeaseStoreConfig
from shardwise.backends.aws.leases import DynamoDBLeaseStore
from shardwise.checkpoint.sequence import TRIM_HORIZON, ExtendedSequenceNumber
from shardwise.hashkeys import HashKeyRange
from shardwise.leases.model import Lease

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

# A few of DynamoDB's ~570 reserved words, several of which shardwise's items really use as attribute names.
RESERVED_WORDS = ("key", "name", "status", "value", "data", "counter", "owner", "table", "set", "add", "remove")
# What an expression may hold besides placeholders.
SYNTAX = {"SET", "REMOVE", "ADD", "AND", "OR", "IN", "=", "attribute_exists", "attribute_not_exists"}
PLACEHOLDER = re.compile(r"[#:][A-Za-z0-9_]+")

attribute_names = st.text(min_size=1, max_size=12)
attribute_values = st.sampled_from([{"S": "x"}, {"N": "1"}, {"B": b"\x00"}, {"BOOL": True}, {"NULL": True}])


def tokens(expression: str) -> list[str]:
    return [token for token in re.split(r"[\s(),]+", expression) if token]


def check_placeholders(expression: Expression, *texts: str) -> None:
    """Every placeholder in ``texts`` is defined, every defined one is used (DynamoDB refuses unused ones),
    and nothing else but syntax appears: no attribute name is ever written out."""
    used = {token for text in texts for token in tokens(text) if token not in SYNTAX}
    assert all(PLACEHOLDER.fullmatch(token) for token in used), used
    assert used == set(expression.names) | set(expression.values)
    assert all(name.startswith("#") for name in expression.names)
    assert all(value.startswith(":") for value in expression.values)


# ----------------------------------------------------------------------------------------------- the builder


@settings(max_examples=200, deadline=None)
@given(
    operations=st.lists(
        st.tuples(
            st.sampled_from(["set", "remove", "add", "equal", "exists", "absent", "equal_or_absent"]),
            attribute_names,
            attribute_values,
        ),
        min_size=1,
        max_size=12,
    )
)
def test_placeholders_never_collide_and_are_all_used(operations: list[tuple[str, str, Any]]) -> None:
    expression = Expression()
    for operation, attribute, value in operations:
        if operation == "set":
            expression.set(attribute, value)
        elif operation == "remove":
            expression.remove(attribute)
        elif operation == "add":
            expression.add(attribute, value)
        elif operation == "equal":
            expression.require_equal(attribute, value)
        elif operation == "exists":
            expression.require_exists(attribute)
        elif operation == "absent":
            expression.require_absent(attribute)
        else:
            expression.require_equal_or_absent(attribute, None if value == {"NULL": True} else value)
    # One placeholder per distinct attribute name, each standing for exactly that name.
    attributes = {attribute for _, attribute, _ in operations}
    assert sorted(expression.names.values()) == sorted(attributes)
    assert len(set(expression.names)) == len(expression.names)
    for attribute in attributes:
        assert expression.names[expression.name(attribute)] == attribute
    check_placeholders(expression, expression.update_expression, expression.condition_expression)


@pytest.mark.parametrize("word", RESERVED_WORDS)
def test_reserved_words_are_always_aliased(word: str) -> None:
    expression = Expression()
    expression.set(word, {"S": "v"})
    expression.remove(word.capitalize())
    expression.add(f"{word}.count", {"N": "1"})
    expression.require_equal(word, {"S": "v"})
    expression.require_absent(f"{word} x")
    written = {word, word.capitalize(), f"{word}.count", "x"}
    for text in (expression.update_expression, expression.condition_expression):
        assert not set(tokens(text)) & written, text
    check_placeholders(expression, expression.update_expression, expression.condition_expression)
    assert set(expression.names.values()) == {word, word.capitalize(), f"{word}.count", f"{word} x"}


def test_the_same_attribute_keeps_its_placeholder_and_each_value_gets_its_own() -> None:
    expression = Expression()
    expression.require_equal("leaseCounter", {"N": "4"})
    expression.set("leaseCounter", {"N": "5"})
    expression.add("ownerSwitchesSinceCheckpoint", {"N": "1"})
    expression.add("leaseCounter2", {"N": "1"})
    assert expression.names == {"#n0": "leaseCounter", "#n1": "ownerSwitchesSinceCheckpoint", "#n2": "leaseCounter2"}
    assert expression.values == {":v0": {"N": "4"}, ":v1": {"N": "5"}, ":v2": {"N": "1"}, ":v3": {"N": "1"}}
    assert expression.update_expression == "SET #n0 = :v1 ADD #n1 :v2, #n2 :v3"
    assert expression.condition_expression == "#n0 = :v0"


def test_update_clauses_come_in_set_remove_add_order() -> None:
    expression = Expression()
    expression.add("a", {"N": "1"})
    expression.remove("b")
    expression.set("c", {"S": "x"})
    expression.set("d", {"S": "y"})
    expression.remove("e")
    assert expression.update_expression == "SET #n2 = :v1, #n3 = :v2 REMOVE #n1, #n4 ADD #n0 :v0"
    assert not expression.has_conditions
    assert Expression().update_expression == ""


def test_conditions_are_anded_and_an_or_keeps_its_meaning() -> None:
    single = Expression()
    single.require_absent("leaseKey")
    assert single.condition_expression == "attribute_not_exists(#n0)"
    several = Expression()
    several.require_exists("leaseKey")
    entity = several.name("entityType")
    several.require(f"attribute_not_exists({entity}) OR {entity} = {several.value({'S': 'LEASE'})}")
    several.require_equal_or_absent("leaseOwner", None)
    several.require_equal_or_absent("checkpointOwner", {"S": "w"})
    assert several.has_conditions
    assert several.condition_expression == (
        "(attribute_exists(#n0)) AND (attribute_not_exists(#n1) OR #n1 = :v0) AND (attribute_not_exists(#n2)) "
        "AND (#n3 = :v1)"
    )


# ------------------------------------------------------------------------------------------ attribute values

numbers = st.integers(min_value=-(10**30), max_value=10**30) | st.floats(allow_nan=False, allow_infinity=False).filter(
    lambda f: f == 0 or 1e-120 < abs(f) < 1e120
)
values = st.recursive(
    st.none()
    | st.booleans()
    | st.text(max_size=8)
    | numbers
    | st.binary(max_size=8)
    | st.frozensets(st.text(max_size=4), min_size=1, max_size=3)
    | st.frozensets(st.integers(min_value=-1000, max_value=1000), min_size=1, max_size=3)
    | st.frozensets(st.binary(max_size=4), min_size=1, max_size=3),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=8,
)


def plain(value: object) -> object:
    """What ``from_attribute_value`` gives back: integral numbers as int, others as float, sets as set."""
    if value is None or isinstance(value, bool | str | bytes):
        return value
    if isinstance(value, int | float):
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        return int(number) if number == number.to_integral_value() else float(number)
    if isinstance(value, list):
        return [plain(member) for member in value]
    if isinstance(value, dict):
        return {name: plain(member) for name, member in value.items()}
    assert isinstance(value, frozenset)
    return {plain(member) for member in value}


def same(actual: object, expected: object) -> None:
    """Equal, with the same types all the way down (1 is not True is not 1.0; bytes stay bytes)."""
    assert type(actual) is type(expected), (actual, expected)
    if isinstance(expected, list):
        assert isinstance(actual, list)
        assert len(actual) == len(expected)
        for got, wanted in zip(actual, expected, strict=True):
            same(got, wanted)
    elif isinstance(expected, dict):
        assert isinstance(actual, dict)
        assert actual.keys() == expected.keys()
        for name, wanted in expected.items():
            same(actual[name], wanted)
    else:
        assert actual == expected


@settings(max_examples=300, deadline=None)
@given(value=values)
def test_values_round_trip(value: object) -> None:
    same(from_attribute_value(to_attribute_value(value)), plain(value))


@pytest.mark.parametrize(
    ("value", "attribute_value"),
    [
        (2.5, {"N": "2.5"}),
        (0.1, {"N": "0.1"}),  # floats as their shortest exact decimal, not the binary expansion
        (10**20, {"N": "100000000000000000000"}),
        (b"\x00\xff", {"B": b"\x00\xff"}),
        (frozenset({"a"}), {"SS": ["a"]}),
        ({"m": [None, True]}, {"M": {"m": {"L": [{"NULL": True}, {"BOOL": True}]}}}),
    ],
)
def test_attribute_values_are_dynamodb_s(value: object, attribute_value: AttributeValueTypeDef) -> None:
    assert to_attribute_value(value) == attribute_value


@pytest.mark.parametrize(
    ("value", "error"),
    [(float("nan"), ValueError), (10**40, ValueError), (frozenset(), ValueError), ({1: "x"}, TypeError)],
)
def test_unstorable_values_are_refused(value: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        to_attribute_value(value)


# ------------------------------------------------------------------------- the lease store's KCL conditions


class CapturingClient:
    """Answers ``update_item`` / ``put_item`` as DynamoDB would on success, and keeps each request."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def update_item(self, **request: Any) -> dict[str, Any]:
        self.requests.append(request)
        item = lease_to_item(Lease("shardId-1", TRIM_HORIZON, lease_owner="w", lease_counter=9))
        return {"Attributes": item}

    def put_item(self, **request: Any) -> dict[str, Any]:
        self.requests.append(request)
        return {}


def resolved(request: dict[str, Any], key: str) -> str:
    """The request's ``key`` expression with its placeholders replaced by the names and values they stand for."""
    names: dict[str, str] = request.get("ExpressionAttributeNames", {})
    values: dict[str, dict[str, Any]] = request.get("ExpressionAttributeValues", {})

    def substitute(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in names:
            return names[token]
        ((kind, value),) = values[token].items()
        return f"{kind}:{sorted(value) if isinstance(value, list) else value!r}"

    return PLACEHOLDER.sub(substitute, str(request[key]))


ENTITY = "(attribute_not_exists(entityType) OR entityType = S:'LEASE')"
LEASE = Lease("shardId-1", ExtendedSequenceNumber("42", 3), lease_owner="a", lease_counter=4)


def sent(operation: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    client = CapturingClient()
    store = DynamoDBLeaseStore(DynamoDBLeaseStoreConfig("app"), client=cast("DynamoDBClient", client))
    getattr(store, operation)(*args, **kwargs)
    [request] = client.requests
    check_placeholders_of(request)
    return request


def check_placeholders_of(request: dict[str, Any]) -> None:
    texts = [request[key] for key in ("UpdateExpression", "ConditionExpression") if key in request]
    used = {token for text in texts for token in PLACEHOLDER.findall(text)}
    assert used == set(request.get("ExpressionAttributeNames", {})) | set(request.get("ExpressionAttributeValues", {}))


@pytest.mark.parametrize(
    ("operation", "args", "condition", "update"),
    [
        (
            "renew_lease",
            (LEASE,),
            f"(leaseCounter = N:'4') AND (attribute_not_exists(checkpointOwner)) AND {ENTITY}",
            "SET leaseCounter = N:'5'",
        ),
        (
            "renew_lease",
            (Lease("shardId-1", TRIM_HORIZON, lease_owner="b", lease_counter=4, checkpoint_owner="a"),),
            f"(leaseCounter = N:'4') AND {ENTITY}",
            "SET leaseCounter = N:'5'",
        ),
        (
            "take_lease",
            (LEASE, "b"),
            f"(leaseCounter = N:'4') AND {ENTITY}",
            "SET leaseCounter = N:'5', leaseOwner = S:'b' REMOVE checkpointOwner "
            "ADD ownerSwitchesSinceCheckpoint N:'1'",
        ),
        (
            "assign_lease",
            (LEASE, "b"),
            "(attribute_exists(leaseKey)) AND (leaseOwner = S:'a') AND (attribute_not_exists(checkpointOwner)) "
            f"AND {ENTITY}",
            "SET leaseOwner = S:'b' REMOVE checkpointOwner ADD leaseCounter N:'1', ownerSwitchesSinceCheckpoint N:'1'",
        ),
        (
            "evict_lease",
            (Lease("shardId-1", TRIM_HORIZON, lease_counter=4),),
            "(attribute_exists(leaseKey)) AND (attribute_not_exists(leaseOwner)) "
            f"AND (attribute_not_exists(checkpointOwner)) AND {ENTITY}",
            "REMOVE leaseOwner, checkpointOwner ADD leaseCounter N:'1'",
        ),
        (
            "initiate_graceful_handoff",
            (LEASE, "b"),
            "(attribute_exists(leaseKey)) AND (leaseOwner = S:'a') AND (attribute_not_exists(checkpointOwner)) "
            f"AND {ENTITY}",
            "SET leaseOwner = S:'b', checkpointOwner = S:'a'",
        ),
        (
            "update_lease",
            (LEASE,),
            f"(leaseCounter = N:'4') AND {ENTITY}",
            "SET leaseCounter = N:'5', checkpoint = S:'42', checkpointSubSequenceNumber = N:'3', "
            "ownerSwitchesSinceCheckpoint = N:'0' "
            "REMOVE pendingCheckpoint, pendingCheckpointSubSequenceNumber, pendingCheckpointState",
        ),
    ],
)
def test_lease_updates_carry_kcl_conditions(operation: str, args: tuple[Any, ...], condition: str, update: str) -> None:
    request = sent(operation, *args)
    assert resolved(request, "ConditionExpression") == condition
    assert resolved(request, "UpdateExpression") == update
    assert request["Key"] == {"leaseKey": {"S": "shardId-1"}}
    assert request["ReturnValues"] == "ALL_NEW"


def test_lease_meta_update_needs_only_the_lease() -> None:
    request = sent("update_lease_meta", "shardId-1", child_shard_ids=["s-3", "s-2"], hash_key_range=HashKeyRange(0, 9))
    assert resolved(request, "ConditionExpression") == f"(attribute_exists(leaseKey)) AND {ENTITY}"
    assert resolved(request, "UpdateExpression") == (
        "SET childShardIds = SS:['s-2', 's-3'], startingHashKey = S:'0', endingHashKey = S:'9'"
    )


def test_lease_creation_is_conditioned_on_the_key_being_free() -> None:
    request = sent("create_lease_if_not_exists", Lease("shardId-1", TRIM_HORIZON))
    assert resolved(request, "ConditionExpression") == "attribute_not_exists(leaseKey)"
    assert "ExpressionAttributeValues" not in request
