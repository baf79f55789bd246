"""Deterministic shard-sync leader: java.util.Random / Collections.shuffle compatibility and the decider."""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardwise.backends.sqlite.leases import SQLiteLeaseStore
from shardwise.checkpoint.sequence import TRIM_HORIZON
from shardwise.errors import ConfigurationError, DependencyError
from shardwise.leadership.deterministic import (
    DETERMINISTIC_SHUFFLE_SEED,
    DeterministicLeaderDecider,
    DeterministicShuffleLeaderDecider,
    JavaRandom,
    deterministic_leaders,
    is_leader,
    java_shuffle,
    java_string_sort_key,
)
from shardwise.leases.model import Lease

# -- an independent reference of java.util.Random ----------------------------------------------------------
#
# Written from the Java SE specification of java.util.Random, deliberately in a different style from the
# production code: Java ``long`` and ``int`` arithmetic is emulated step by step with struct round-trips.


def jlong(x: int) -> int:
    """Truncate to a Java ``long`` (64-bit two's complement)."""
    return int(struct.unpack("<q", struct.pack("<Q", x & 0xFFFF_FFFF_FFFF_FFFF))[0])


def jint(x: int) -> int:
    """Truncate to a Java ``int`` (32-bit two's complement)."""
    return int(struct.unpack("<i", struct.pack("<I", x & 0xFFFF_FFFF))[0])


class RefRandom:
    MULTIPLIER = jlong(0x5DEECE66D)
    ADDEND = jlong(0xB)
    MASK = jlong((1 << 48) - 1)

    def __init__(self, seed: int) -> None:
        self.seed = jlong((jlong(seed) ^ self.MULTIPLIER) & self.MASK)
        self.rejections = 0

    def next(self, bits: int) -> int:
        self.seed = jlong(jlong(jlong(self.seed * self.MULTIPLIER) + self.ADDEND) & self.MASK)
        unsigned_shifted = (self.seed & 0xFFFF_FFFF_FFFF_FFFF) >> (48 - bits)  # seed >>> (48 - bits)
        return jint(unsigned_shifted)

    def next_int(self) -> int:
        return self.next(32)

    def next_int_bounded(self, bound: int) -> int:
        assert bound > 0
        r = self.next(31)
        m = bound - 1
        if (bound & m) == 0:
            return jint(jlong(jlong(bound) * jlong(r)) >> 31)
        u = r
        r = u % bound
        while jint(jint(u - r) + m) < 0:
            self.rejections += 1
            u = self.next(31)
            r = u % bound
        return r


def ref_shuffle(items: list[str], seed: int) -> list[str]:
    rnd = RefRandom(seed)
    out = list(items)
    i = len(out) - 1
    while i >= 1:
        j = rnd.next_int_bounded(i + 1)
        out[i], out[j] = out[j], out[i]
        i -= 1
    return out


# -- known answers -----------------------------------------------------------------------------------------


def test_published_next_int_values() -> None:
    # Widely quoted first values of new Random(seed).nextInt().
    assert JavaRandom(0).next_int() == -1155484576
    assert JavaRandom(42).next_int() == -1170105035
    assert RefRandom(0).next_int() == -1155484576
    assert RefRandom(42).next_int() == -1170105035


# Recorded from OpenJDK 17 (java.util.Random / Collections.shuffle) and re-derived by RefRandom below.
JAVA_1947_BOUNDS = [2, 3, 4, 5, 6, 7, 8, 9, 10, 100, 1000, 1 << 20]
JAVA_1947_VALUES = [1, 1, 0, 4, 4, 6, 5, 7, 5, 95, 342, 951150]
JAVA_42_NEXT_INT_10 = [0, 3, 8, 4, 0, 5, 5, 8, 9, 3]
JAVA_MINUS1_NEXT_INT_MAX = [577549913, 943952225, 26349579, 1176895439, 1421815604]
JAVA_7_NEXT_INT_2POW30_PLUS_1 = [
    20678044, 747989380, 1053566254, 755731200, 259278708, 542588911, 178712961, 234738279, 249143924,
    1015705239, 546366576, 821700123, 472334535, 672191818, 222046325, 947507673, 599578047, 221408512,
    192020652, 1405245,
]  # fmt: skip
JAVA_SHUFFLE_WORKERS_1947 = ["worker-c", "worker-e", "worker-d", "worker-f", "worker-a", "worker-g", "worker-b"]
JAVA_SHUFFLE_0_TO_9_1947 = [8, 5, 1, 6, 9, 4, 2, 0, 7, 3]
JAVA_SHUFFLE_0_TO_9_42 = [4, 6, 2, 1, 7, 9, 8, 5, 3, 0]


def test_next_int_bounded_known_answers() -> None:
    rnd, ref = JavaRandom(1947), RefRandom(1947)
    assert [rnd.next_int(n) for n in JAVA_1947_BOUNDS] == JAVA_1947_VALUES
    assert [ref.next_int_bounded(n) for n in JAVA_1947_BOUNDS] == JAVA_1947_VALUES
    rnd, ref = JavaRandom(42), RefRandom(42)
    assert [rnd.next_int(10) for _ in range(10)] == JAVA_42_NEXT_INT_10
    assert [ref.next_int_bounded(10) for _ in range(10)] == JAVA_42_NEXT_INT_10
    rnd, ref = JavaRandom(-1), RefRandom(-1)
    assert [rnd.next_int(2**31 - 1) for _ in range(5)] == JAVA_MINUS1_NEXT_INT_MAX
    assert [ref.next_int_bounded(2**31 - 1) for _ in range(5)] == JAVA_MINUS1_NEXT_INT_MAX


def test_rejection_loop_with_32_bit_overflow() -> None:
    # bound = 2**30 + 1: about half the 31-bit draws fall in the incomplete last bucket, where
    # ``u - r + m`` overflows an int and Java draws again.
    bound = 2**30 + 1
    rnd, ref = JavaRandom(7), RefRandom(7)
    assert [rnd.next_int(bound) for _ in range(20)] == JAVA_7_NEXT_INT_2POW30_PLUS_1
    assert [ref.next_int_bounded(bound) for _ in range(20)] == JAVA_7_NEXT_INT_2POW30_PLUS_1
    assert ref.rejections > 0  # the vector exercises the loop
    # The two generators stay in lock step afterwards.
    assert rnd.next_int() == ref.next_int()


def test_power_of_two_branch() -> None:
    for seed in (0, 1, 1947, -5, 2**40):
        rnd, ref = JavaRandom(seed), RefRandom(seed)
        for bound in (1, 2, 4, 1 << 16, 1 << 30):
            assert rnd.next_int(bound) == ref.next_int_bounded(bound)


def test_shuffle_known_answers() -> None:
    workers = [f"worker-{c}" for c in "abcdefg"]
    assert java_shuffle(workers, 1947) == JAVA_SHUFFLE_WORKERS_1947
    assert ref_shuffle(workers, 1947) == JAVA_SHUFFLE_WORKERS_1947
    digits = [str(i) for i in range(10)]
    assert java_shuffle(digits, 1947) == [str(i) for i in JAVA_SHUFFLE_0_TO_9_1947]
    assert java_shuffle(digits, 42) == [str(i) for i in JAVA_SHUFFLE_0_TO_9_42]
    assert java_shuffle(digits, 42) == ref_shuffle(digits, 42)
    assert digits == [str(i) for i in range(10)]  # the input is not modified
    assert java_shuffle([], 1947) == []
    assert java_shuffle(["only"], 1947) == ["only"]


@given(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.lists(st.integers(min_value=1, max_value=2**31 - 1), min_size=1, max_size=30),
)
@settings(max_examples=300, deadline=None)
def test_java_random_matches_the_reference(seed: int, bounds: list[int]) -> None:
    rnd, ref = JavaRandom(seed), RefRandom(seed)
    for bound in bounds:
        assert rnd.next_int(bound) == ref.next_int_bounded(bound)
        assert rnd.next_int() == ref.next_int()


@given(st.lists(st.text(max_size=6), max_size=40), st.integers(min_value=-(2**63), max_value=2**63 - 1))
@settings(max_examples=200, deadline=None)
def test_java_shuffle_matches_the_reference(items: list[str], seed: int) -> None:
    assert java_shuffle(items, seed) == ref_shuffle(items, seed)


def test_next_int_rejects_bad_bounds() -> None:
    with pytest.raises(ValueError, match="bound"):
        JavaRandom(1).next_int(0)
    with pytest.raises(ValueError, match="bound"):
        JavaRandom(1).next_int(2**31)
    with pytest.raises(ValueError, match="bits"):
        JavaRandom(1).next_bits(33)


# -- Java string order -------------------------------------------------------------------------------------


def test_java_string_order_is_utf16_code_unit_order() -> None:
    emoji = "\U0001f600"  # surrogate pair D83D DE00
    private_use = "\ue000"
    # Python orders by code point; Java by UTF-16 code unit, so the pair (0xD83D...) sorts first.
    assert private_use < emoji
    assert sorted([private_use, emoji], key=java_string_sort_key) == [emoji, private_use]
    assert sorted(["b", "ab", "a", "B", ""], key=java_string_sort_key) == ["", "B", "a", "ab", "b"]
    assert sorted(["\uffff", emoji], key=java_string_sort_key) == [emoji, "\uffff"]


# -- the pure decision -------------------------------------------------------------------------------------


def test_deterministic_leaders() -> None:
    workers = [f"worker-{c}" for c in "abcdefg"]
    assert deterministic_leaders(workers) == {"worker-c"}
    assert deterministic_leaders(workers, leaders=2) == {"worker-c", "worker-e"}
    assert deterministic_leaders(workers, leaders=100) == set(workers)
    # Duplicates, None owners and input order do not matter.
    assert deterministic_leaders([None, *reversed(workers), "worker-a", None]) == {"worker-c"}
    assert deterministic_leaders([]) == frozenset()
    assert deterministic_leaders([None, None]) == frozenset()
    assert deterministic_leaders(["solo"]) == {"solo"}
    with pytest.raises(ConfigurationError, match="leaders"):
        deterministic_leaders(workers, leaders=0)
    assert DETERMINISTIC_SHUFFLE_SEED == 1947


@given(st.lists(st.one_of(st.none(), st.text(min_size=1, max_size=8)), max_size=25), st.randoms())
@settings(max_examples=200, deadline=None)
def test_deterministic_leaders_ignores_input_order(owners: list[str | None], rnd: object) -> None:
    import random

    assert isinstance(rnd, random.Random)
    shuffled = list(owners)
    rnd.shuffle(shuffled)
    first = deterministic_leaders(owners)
    assert deterministic_leaders(shuffled) == first
    distinct = {o for o in owners if o is not None}
    if distinct:
        assert len(first) == 1
        assert first <= distinct
        expected = ref_shuffle(sorted(distinct, key=lambda s: s.encode("utf-16-be", "surrogatepass")), 1947)[0]
        assert first == {expected}
    else:
        assert first == frozenset()


def lease(key: str, owner: str | None) -> Lease:
    return Lease(key, TRIM_HORIZON, lease_owner=owner)


def test_is_leader() -> None:
    owned = [lease("s1", "worker-a"), lease("s2", "worker-c"), lease("s3", None), lease("s4", "worker-b")]
    winners = [w for w in ("worker-a", "worker-b", "worker-c", "worker-z") if is_leader(w, owned)]
    assert winners == list(deterministic_leaders(["worker-a", "worker-b", "worker-c"]))
    # No owner at all: every worker leads.
    unowned = [lease("s1", None), lease("s2", None)]
    assert all(is_leader(w, unowned) for w in ("worker-a", "anyone"))
    assert is_leader("anyone", [])
    decider = DeterministicLeaderDecider()
    assert decider.is_leader(winners[0], owned)
    assert decider.elect(lease.lease_owner for lease in owned) == {winners[0]}
    with pytest.raises(ConfigurationError):
        DeterministicLeaderDecider(leaders=0)


# -- against real Java -------------------------------------------------------------------------------------

JAVA_PROGRAM = r"""
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.*;
import java.util.stream.Collectors;

public class ElectLeaders {
    // Reads owner lists (one owner per line, lists separated by a line "--"), prints for each list the
    // KCL election order: distinct, sorted, Collections.shuffle(new Random(1947)); each owner as UTF-16
    // code units in hex, owners separated by spaces.
    public static void main(String[] args) throws Exception {
        List<String> lines = Files.readAllLines(Paths.get(args[0]), StandardCharsets.UTF_8);
        List<List<String>> groups = new ArrayList<>();
        List<String> current = new ArrayList<>();
        for (String line : lines) {
            if (line.equals("--")) { groups.add(current); current = new ArrayList<>(); }
            else current.add(line);
        }
        StringBuilder out = new StringBuilder();
        for (List<String> owners : groups) {
            List<String> hosts = owners.stream().distinct().sorted().collect(Collectors.toList());
            Collections.shuffle(hosts, new Random(1947));
            List<String> encoded = new ArrayList<>();
            for (String h : hosts) {
                StringBuilder sb = new StringBuilder();
                for (char c : h.toCharArray()) sb.append(String.format("%04x", (int) c));
                encoded.add(sb.length() == 0 ? "-" : sb.toString());
            }
            out.append(String.join(" ", encoded)).append('\n');
        }
        System.out.print(out);
    }
}
"""


def decode_units(hex_units: str) -> str:
    if hex_units == "-":
        return ""
    return bytes.fromhex(hex_units).decode("utf-16-be", "surrogatepass")


@pytest.fixture
def java() -> str:
    path = shutil.which("java")
    if path is None:
        pytest.skip("java is not installed")
    return path


def test_election_order_matches_real_java(java: str, tmp_path: Path) -> None:
    groups = [
        [f"worker-{c}" for c in "abcdefg"],
        [f"10.0.0.{i}:worker-{i % 3}" for i in range(25)],
        ["b", "a", "b", "c", "a"],
        ["solo"],
        ["\U0001f600-worker", "\ue000-worker", "zeta", "Ωmega", "alpha", "Alpha", "ä", "\uffff"],
        [f"host-{i:03d}" for i in range(100, 0, -3)],
        [f"{i}" for i in range(1000)],
    ]
    source = tmp_path / "ElectLeaders.java"
    source.write_text(JAVA_PROGRAM, encoding="utf-8")
    data = tmp_path / "owners.txt"
    data.write_text("".join("".join(f"{o}\n" for o in g) + "--\n" for g in groups), encoding="utf-8")
    done = subprocess.run([java, str(source), str(data)], capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    java_orders = [[decode_units(t) for t in line.split(" ")] for line in done.stdout.splitlines()]
    assert len(java_orders) == len(groups)
    for owners, java_order in zip(groups, java_orders, strict=True):
        python_order = java_shuffle(sorted(set(owners), key=java_string_sort_key), DETERMINISTIC_SHUFFLE_SEED)
        assert python_order == java_order
        assert deterministic_leaders(owners) == {java_order[0]}


# -- the stateful shell ------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteLeaseStore]:
    s = SQLiteLeaseStore(tmp_path / "leases.db", "app")
    s.create_table_if_not_exists()
    yield s
    s.close()


class CountingScans:
    def __init__(self, store: SQLiteLeaseStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.fail = False
        self._inner = store.list_leases
        monkeypatch.setattr(store, "list_leases", self)

    def __call__(self) -> list[Lease]:
        self.calls += 1
        if self.fail:
            raise DependencyError("table unavailable")
        return self._inner()


def test_shell_rescans_at_most_once_per_interval(store: SQLiteLeaseStore, monkeypatch: pytest.MonkeyPatch) -> None:
    scans = CountingScans(store, monkeypatch)
    clock = Clock()
    a = DeterministicShuffleLeaderDecider(store, "worker-a", interval_s=300.0, clock=clock)
    z = DeterministicShuffleLeaderDecider(store, "worker-z", interval_s=300.0, clock=clock)
    # Nobody owns a lease yet: everyone leads. The first call scans synchronously.
    before: frozenset[str] | None = a.leaders
    assert before is None
    assert a.is_leader() is True
    assert scans.calls == 1
    assert a.leaders == frozenset()
    assert z.is_leader() is True
    for key, owner in [("s1", "worker-a"), ("s2", "worker-c"), ("s3", "worker-b")]:
        assert store.create_lease_if_not_exists(lease(key, owner))
    scans.calls = 0
    clock.now += 59
    assert a.is_leader() is True  # still the first election
    assert scans.calls == 0
    clock.now += 1  # KCL elects again 60 s after the first election ...
    expected = deterministic_leaders(["worker-a", "worker-b", "worker-c"])
    assert a.is_leader() is ("worker-a" in expected)
    assert scans.calls == 1
    assert a.leaders == expected
    scans.calls = 0
    clock.now += 299  # ... and then every interval
    assert a.is_leader() is ("worker-a" in expected)
    assert scans.calls == 0
    clock.now += 1
    assert a.is_leader() is ("worker-a" in expected)
    assert scans.calls == 1
    scans.calls = 1
    assert z.is_leader() is False
    assert a.refresh() == expected
    assert scans.calls == 3


def test_shell_survives_failed_scans(store: SQLiteLeaseStore, monkeypatch: pytest.MonkeyPatch) -> None:
    scans = CountingScans(store, monkeypatch)
    clock = Clock()
    decider = DeterministicShuffleLeaderDecider(store, "worker-z", clock=clock)
    scans.fail = True
    assert decider.is_leader() is True  # never elected: behave as KCL with no leaders
    assert decider.is_leader() is True
    assert scans.calls == 2  # and try again on the next call
    scans.fail = False
    assert store.create_lease_if_not_exists(lease("s1", "worker-a"))
    assert decider.is_leader() is False
    scans.fail = True
    clock.now += 300
    assert decider.is_leader() is False  # keeps the previous election
    calls = scans.calls
    assert decider.is_leader() is False
    assert scans.calls == calls  # and waits an interval before the next try


def test_shell_validation(store: SQLiteLeaseStore) -> None:
    with pytest.raises(ConfigurationError):
        DeterministicShuffleLeaderDecider(store, "")
    with pytest.raises(ConfigurationError):
        DeterministicShuffleLeaderDecider(store, "w", interval_s=0)
    assert DeterministicShuffleLeaderDecider(store, "w").worker_id == "w"
