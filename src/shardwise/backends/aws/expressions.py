"""DynamoDB request expressions and the attribute values they carry: the one builder both DynamoDB stores use.

:class:`Expression` collects the update clauses (``SET``, ``REMOVE``, ``ADD``) and the conditions of one
request. Every attribute name goes through a numbered placeholder (``#n0``, ``#n1``, … — one per distinct
name) and every value through another (``:v0``, ``:v1``, …), so that no attribute name is ever read as a
DynamoDB reserved word (``key``, ``name``, ``status``…) or has to be a valid identifier: coordinator items may
use any attribute name. The two kinds of placeholder start with different characters and are numbered by
one builder, so they never collide.

Conditions are ANDed, each in parentheses once there are several, so a condition that is itself an ``OR``
keeps its meaning. The lease store writes KCL's conditions with it (kcl-protocol.md §2.3), the coordinator
item tables their namespace and ``expect`` conditions.

:func:`to_attribute_value` and :func:`from_attribute_value` map Python values to DynamoDB attribute values
and back through boto3's ``TypeSerializer`` / ``TypeDeserializer`` (floats as exact decimals on the way in;
numbers back as ``int`` when integral, else ``float``; binary back as ``bytes``), checked as the SQLite backend
checks them.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer

from shardwise.tables.rules import check_map_key, set_kind, storable_number, unstorable_type_error

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

__all__ = ["Expression", "from_attribute_value", "to_attribute_value"]

_SERIALIZER = TypeSerializer()
_DESERIALIZER = TypeDeserializer()


class Expression:
    """The update and condition expressions of one DynamoDB request, with their placeholder maps.

    Build the clauses with the methods below, then send :attr:`update_expression`,
    :attr:`condition_expression` (or use it as a ``FilterExpression`` / ``KeyConditionExpression``),
    :attr:`names` and, if not empty, :attr:`values`. :meth:`name` and :meth:`value` give the placeholders for
    conditions written by hand (``IN`` lists, ``OR``).
    """

    def __init__(self) -> None:
        self._names: dict[str, str] = {}
        self._placeholders: dict[str, str] = {}
        self._values: dict[str, AttributeValueTypeDef] = {}
        self._set: list[str] = []
        self._remove: list[str] = []
        self._add: list[str] = []
        self._conditions: list[str] = []

    # -- placeholders ------------------------------------------------------------------------------------

    def name(self, attribute: str) -> str:
        """The placeholder of ``attribute`` (the same one each time it is asked for)."""
        placeholder = self._placeholders.get(attribute)
        if placeholder is None:
            placeholder = f"#n{len(self._placeholders)}"
            self._placeholders[attribute] = placeholder
            self._names[placeholder] = attribute
        return placeholder

    def value(self, value: AttributeValueTypeDef) -> str:
        """A new placeholder for ``value``."""
        placeholder = f":v{len(self._values)}"
        self._values[placeholder] = value
        return placeholder

    @property
    def names(self) -> dict[str, str]:
        """``ExpressionAttributeNames``: placeholder → attribute name."""
        return self._names

    @property
    def values(self) -> dict[str, AttributeValueTypeDef]:
        """``ExpressionAttributeValues``: placeholder → attribute value (DynamoDB refuses an empty map: send
        it only when it is not empty)."""
        return self._values

    # -- the update --------------------------------------------------------------------------------------

    def set(self, attribute: str, value: AttributeValueTypeDef) -> None:
        """``SET attribute = value``."""
        self._set.append(f"{self.name(attribute)} = {self.value(value)}")

    def remove(self, attribute: str) -> None:
        """``REMOVE attribute``."""
        self._remove.append(self.name(attribute))

    def add(self, attribute: str, value: AttributeValueTypeDef) -> None:
        """``ADD attribute value``: a number added to the attribute (0 if absent), or members added to a set."""
        self._add.append(f"{self.name(attribute)} {self.value(value)}")

    @property
    def update_expression(self) -> str:
        clauses = []
        if self._set:
            clauses.append("SET " + ", ".join(self._set))
        if self._remove:
            clauses.append("REMOVE " + ", ".join(self._remove))
        if self._add:
            clauses.append("ADD " + ", ".join(self._add))
        return " ".join(clauses)

    # -- conditions --------------------------------------------------------------------------------------

    def require(self, condition: str) -> None:
        """AND a condition written with :meth:`name` and :meth:`value` placeholders."""
        self._conditions.append(condition)

    def require_equal(self, attribute: str, value: AttributeValueTypeDef) -> None:
        """``attribute = value``."""
        self.require(f"{self.name(attribute)} = {self.value(value)}")

    def require_exists(self, attribute: str) -> None:
        """``attribute_exists(attribute)``."""
        self.require(f"attribute_exists({self.name(attribute)})")

    def require_absent(self, attribute: str) -> None:
        """``attribute_not_exists(attribute)``."""
        self.require(f"attribute_not_exists({self.name(attribute)})")

    def require_equal_or_absent(self, attribute: str, value: AttributeValueTypeDef | None) -> None:
        """``attribute = value``, or ``attribute`` does not exist when ``value`` is ``None``."""
        if value is None:
            self.require_absent(attribute)
        else:
            self.require_equal(attribute, value)

    @property
    def has_conditions(self) -> bool:
        return bool(self._conditions)

    @property
    def condition_expression(self) -> str:
        """The conditions ANDed (each parenthesised when there are several)."""
        if len(self._conditions) == 1:
            return self._conditions[0]
        return " AND ".join(f"({condition})" for condition in self._conditions)


# ------------------------------------------------------------------------------------------- value mapping


def _prepare(value: object) -> object:
    """``value`` in the form ``TypeSerializer`` takes (floats as exact decimals), checked as the SQLite backend
    checks it: finite numbers, no empty or mixed sets, string map keys."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float | Decimal):
        return storable_number(value)
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, Mapping):
        return {check_map_key(name): _prepare(member) for name, member in value.items()}
    if isinstance(value, list | tuple):
        return [_prepare(member) for member in value]
    if isinstance(value, set | frozenset):
        kind = set_kind(value)
        if kind == "S":
            return set(value)
        if kind == "N":
            return {storable_number(member) for member in value}
        return {bytes(member) for member in value}
    raise unstorable_type_error(value)


def to_attribute_value(value: object) -> AttributeValueTypeDef:
    """The DynamoDB attribute value of a Python value (see the ``ItemTable`` value mapping)."""
    return _SERIALIZER.serialize(_prepare(value))


def _plain(value: object) -> object:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Binary):
        raw = getattr(value, "value", None)  # the stubs do not declare Binary.value
        if not isinstance(raw, bytes | bytearray):
            raise TypeError(f"unexpected binary value {raw!r}")
        return bytes(raw)
    if isinstance(value, list):
        return [_plain(member) for member in value]
    if isinstance(value, dict):
        return {name: _plain(member) for name, member in value.items()}
    if isinstance(value, set):
        return {_plain(member) for member in value}
    return value


def from_attribute_value(value: AttributeValueTypeDef) -> Any:
    """The Python value of a DynamoDB attribute value (numbers as ``int`` when integral, else ``float``)."""
    return _plain(_DESERIALIZER.deserialize(cast("Any", value)))
