"""The pure half of cluster-wide feature versions (issue #6, after Kafka's KIP-584/778/1022).

Registry defaults per release, release parsing, the ranges a worker advertises in each mode, the validation of
a request — every rule, in Kafka's order (kafka-features-and-state-stores.md A.6), all-or-nothing — and the
``Migration3.0`` ↔ levels mapping. No I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardwise.errors import ConfigurationError
from shardwise.versions.features import (
    CURRENT_RELEASE,
    LEASE_ASSIGNMENT,
    LEASE_DISCOVERY,
    MAX_LEVEL,
    REGISTRY,
    RELEASES,
    STATE_FORMAT,
    TABLE_LAYOUT,
    FeaturesConfig,
    FeatureUpdate,
    SupportedRange,
    UpdateContext,
    UpgradeType,
    WorkerSupport,
    admission_problem,
    client_version_for,
    default_levels,
    dependency_problem,
    first_unsupported,
    fleet_range,
    levels_from_client_version,
    parse_release,
    release_pin_ranges,
    validate_updates,
    worker_supported_ranges,
)
from shardwise.versions.migration_state import ClientVersion

UPGRADE = UpgradeType.UPGRADE
SAFE = UpgradeType.SAFE_DOWNGRADE
UNSAFE = UpgradeType.UNSAFE_DOWNGRADE

R = SupportedRange
ALL = {LEASE_ASSIGNMENT: R(0, 2), LEASE_DISCOVERY: R(0, 2), TABLE_LAYOUT: R(0, 2), STATE_FORMAT: R(0, 2)}
NOTHING: dict[str, int] = {LEASE_ASSIGNMENT: 0, LEASE_DISCOVERY: 0, TABLE_LAYOUT: 0}
V2X_LEVELS = {LEASE_ASSIGNMENT: 1, LEASE_DISCOVERY: 1, TABLE_LAYOUT: 2}
UPG_LEVELS = {LEASE_ASSIGNMENT: 1, LEASE_DISCOVERY: 2, TABLE_LAYOUT: 2}
V3X_LEVELS = {LEASE_ASSIGNMENT: 2, LEASE_DISCOVERY: 2, TABLE_LAYOUT: 2}


def up(feature: str, level: int, kind: UpgradeType = UPGRADE) -> FeatureUpdate:
    return FeatureUpdate(feature, level, kind)


def worker(worker_id: str, **ranges: SupportedRange) -> WorkerSupport:
    """A live worker; keyword names use ``_`` for ``.`` (``lease_assignment=R(0, 1)``), unnamed features 0-2."""
    merged = dict(ALL)
    merged.update({name.replace("_", "."): value for name, value in ranges.items()})
    return WorkerSupport(worker_id, merged)


def reason(
    finalized: Mapping[str, int],
    updates: Sequence[FeatureUpdate],
    workers: Sequence[WorkerSupport] = (),
    context: UpdateContext | None = None,
) -> str | None:
    problem = validate_updates(finalized, updates, workers, context)
    return None if problem is None else problem[1]


def invalid(level: int, feature: str, text: str) -> str:
    return f"Invalid update version {level} for feature {feature}. {text}"


# ================================================================================================ registry


class TestRegistry:
    def test_features_in_registry_order(self) -> None:
        assert list(REGISTRY) == [LEASE_ASSIGNMENT, LEASE_DISCOVERY, TABLE_LAYOUT, STATE_FORMAT]
        assert RELEASES == ("0.1", "0.2", "0.3", "0.4")
        assert CURRENT_RELEASE == "0.4"
        assert MAX_LEVEL == 32767

    @pytest.mark.parametrize(
        ("release", "expected"),
        [
            ("0.1", {LEASE_ASSIGNMENT: 1, LEASE_DISCOVERY: 1, TABLE_LAYOUT: 1, STATE_FORMAT: 0}),
            ("0.2", {LEASE_ASSIGNMENT: 1, LEASE_DISCOVERY: 2, TABLE_LAYOUT: 2, STATE_FORMAT: 0}),
            ("0.3", {LEASE_ASSIGNMENT: 2, LEASE_DISCOVERY: 2, TABLE_LAYOUT: 2, STATE_FORMAT: 1}),
            ("0.4", {LEASE_ASSIGNMENT: 2, LEASE_DISCOVERY: 2, TABLE_LAYOUT: 2, STATE_FORMAT: 2}),
        ],
    )
    def test_default_levels_per_release(self, release: str, expected: dict[str, int]) -> None:
        levels = default_levels(release)
        assert levels == expected
        assert list(levels) == list(REGISTRY)

    def test_level_lookup_and_dependencies(self) -> None:
        assignment = REGISTRY[LEASE_ASSIGNMENT]
        assert assignment.max_level == 2
        two = assignment.level(2)
        assert two is not None
        assert dict(two.requires) == {LEASE_DISCOVERY: 2}
        assert assignment.level(0) is None
        assert assignment.level(3) is None
        one = REGISTRY[LEASE_DISCOVERY].level(1)
        assert one is not None
        assert dict(one.requires) == {}

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("0.3", "0.3"),
            ("0.3.1", "0.3"),
            (" 0.2 ", "0.2"),
            ("00.1", "0.1"),
            ("0.1.0.7", "0.1"),
            ("9.9", None),
            ("x", None),
            ("0", None),
            ("", None),
            ("0.x", None),
            ("0.4", "0.4"),
            ("0.5", None),
            ("-0.1", None),
        ],
    )
    def test_parse_release(self, text: str, expected: str | None) -> None:
        assert parse_release(text) == expected

    def test_release_pin_ranges(self) -> None:
        assert release_pin_ranges("0.1") == {
            LEASE_ASSIGNMENT: R(0, 1),
            LEASE_DISCOVERY: R(0, 1),
            TABLE_LAYOUT: R(0, 1),
            STATE_FORMAT: R(0, 0),
        }
        assert release_pin_ranges("0.2") == {
            LEASE_ASSIGNMENT: R(0, 1),
            LEASE_DISCOVERY: R(0, 2),
            TABLE_LAYOUT: R(0, 2),
            STATE_FORMAT: R(0, 0),
        }
        assert release_pin_ranges("0.3") == {**ALL, STATE_FORMAT: R(0, 1)}
        assert release_pin_ranges("0.4") == ALL


# ========================================================================================== supported ranges


class TestSupportedRange:
    def test_membership_and_text(self) -> None:
        span = R(1, 2)
        assert 1 in span
        assert 2 in span
        assert 0 not in span
        assert 3 not in span
        assert "1" not in span
        assert str(span) == "1-2"
        assert span.supported
        assert not R(0, 0).supported
        assert str(R(0, 0)) == "0-0"


class TestWorkerSupportedRanges:
    def test_follows_migration_runs_either_generation(self) -> None:
        for assignment in ("lease-count-2x", "utilization-3x"):
            assert worker_supported_ranges(assignment=assignment, follows_migration=True) == ALL

    def test_final_3x_never_leaves_3x(self) -> None:
        ranges = worker_supported_ranges(assignment="lease-count-2x", follows_migration=True, final_3x=True)
        assert ranges == {
            LEASE_ASSIGNMENT: R(2, 2),
            LEASE_DISCOVERY: R(2, 2),
            TABLE_LAYOUT: R(0, 2),
            STATE_FORMAT: R(0, 2),
        }

    def test_pure_2x(self) -> None:
        ranges = worker_supported_ranges(assignment="lease-count-2x", follows_migration=False)
        assert ranges == {
            LEASE_ASSIGNMENT: R(0, 1),
            LEASE_DISCOVERY: R(0, 2),
            TABLE_LAYOUT: R(0, 2),
            STATE_FORMAT: R(0, 2),
        }

    def test_pure_3x(self) -> None:
        ranges = worker_supported_ranges(assignment="utilization-3x", follows_migration=False)
        assert ranges == {
            LEASE_ASSIGNMENT: R(2, 2),
            LEASE_DISCOVERY: R(2, 2),
            TABLE_LAYOUT: R(0, 2),
            STATE_FORMAT: R(0, 2),
        }

    def test_release_pin(self) -> None:
        ranges = worker_supported_ranges(assignment="lease-count-2x", follows_migration=True, release="0.2")
        assert ranges == {
            LEASE_ASSIGNMENT: R(0, 1),
            LEASE_DISCOVERY: R(0, 2),
            TABLE_LAYOUT: R(0, 2),
            STATE_FORMAT: R(0, 0),
        }
        ranges = worker_supported_ranges(assignment="lease-count-2x", follows_migration=True, release="0.1")
        assert ranges == {
            LEASE_ASSIGNMENT: R(0, 1),
            LEASE_DISCOVERY: R(0, 1),
            TABLE_LAYOUT: R(0, 1),
            STATE_FORMAT: R(0, 0),
        }
        ranges = worker_supported_ranges(assignment="lease-count-2x", follows_migration=True, release="0.3")
        assert ranges[STATE_FORMAT] == R(0, 1)

    def test_a_pure_3x_worker_pinned_before_3x_supports_no_assignment(self) -> None:
        ranges = worker_supported_ranges(assignment="utilization-3x", follows_migration=False, release="0.2")
        assert ranges[LEASE_ASSIGNMENT] == R(0, 0)
        assert not ranges[LEASE_ASSIGNMENT].supported
        assert ranges[LEASE_DISCOVERY] == R(2, 2)

    def test_max_levels_lower_single_maxima(self) -> None:
        ranges = worker_supported_ranges(
            assignment="lease-count-2x", follows_migration=True, max_levels={LEASE_ASSIGNMENT: 1}
        )
        assert ranges == {
            LEASE_ASSIGNMENT: R(0, 1),
            LEASE_DISCOVERY: R(0, 2),
            TABLE_LAYOUT: R(0, 2),
            STATE_FORMAT: R(0, 2),
        }
        ranges = worker_supported_ranges(
            assignment="utilization-3x", follows_migration=False, max_levels={LEASE_DISCOVERY: 1, TABLE_LAYOUT: 0}
        )
        assert ranges[LEASE_DISCOVERY] == R(0, 0)  # 2-2 capped at 1 is empty
        assert ranges[TABLE_LAYOUT] == R(0, 0)
        assert ranges[LEASE_ASSIGNMENT] == R(2, 2)
        # a cap above what the release shipped changes nothing
        ranges = worker_supported_ranges(
            assignment="lease-count-2x", follows_migration=True, max_levels={TABLE_LAYOUT: 9}
        )
        assert ranges[TABLE_LAYOUT] == R(0, 2)


class TestFleetAndAdmission:
    def test_fleet_range_is_the_intersection(self) -> None:
        assert fleet_range(LEASE_ASSIGNMENT, []) is None
        workers = [worker("w1"), worker("w2", lease_assignment=R(0, 1))]
        assert fleet_range(LEASE_ASSIGNMENT, workers) == R(0, 1)
        assert fleet_range(LEASE_DISCOVERY, workers) == R(0, 2)
        disjoint = [worker("w1", lease_assignment=R(2, 2)), worker("w2", lease_assignment=R(0, 1))]
        assert fleet_range(LEASE_ASSIGNMENT, disjoint) == R(0, 0)
        # a feature a worker did not advertise counts as [0, 0]
        assert fleet_range("unknown.feature", workers) == R(0, 0)

    def test_first_unsupported_skips_unfinalized_levels(self) -> None:
        ranges = {LEASE_ASSIGNMENT: R(0, 1), LEASE_DISCOVERY: R(0, 2)}
        assert first_unsupported({LEASE_ASSIGNMENT: 1, LEASE_DISCOVERY: 2}, ranges) is None
        assert first_unsupported({LEASE_ASSIGNMENT: 2, LEASE_DISCOVERY: 2}, ranges) == (LEASE_ASSIGNMENT, 2, R(0, 1))
        assert first_unsupported({TABLE_LAYOUT: 0}, ranges) is None
        assert first_unsupported({TABLE_LAYOUT: 2}, ranges) == (TABLE_LAYOUT, 2, R(0, 0))

    def test_admission_problem_in_kafkas_words(self) -> None:
        ranges = {LEASE_ASSIGNMENT: R(0, 1), LEASE_DISCOVERY: R(0, 2), TABLE_LAYOUT: R(0, 2), STATE_FORMAT: R(0, 2)}
        assert admission_problem({LEASE_ASSIGNMENT: 1, LEASE_DISCOVERY: 0}, ranges) is None
        assert admission_problem({LEASE_ASSIGNMENT: 2}, ranges) == (
            "the worker does not support finalized version 2 of lease.assignment. "
            "The worker wants a version between 0 and 1, inclusive."
        )
        assert admission_problem({"other.feature": 1}, ranges, who="binary") == (
            "the binary does not support finalized version 1 of other.feature. "
            "The binary wants a version between 0 and 0, inclusive."
        )


# ================================================================================================ validation


DOWNGRADE_WITHOUT_FLAG = (
    "Can't downgrade the version of this feature without setting the upgrade type to either safe or unsafe downgrade."
)


class TestValidateUpdates:
    def test_a_valid_request(self) -> None:
        assert validate_updates(NOTHING, [up(LEASE_DISCOVERY, 2)], [worker("w1")]) is None
        assert validate_updates(NOTHING, [], []) is None

    def test_same_level_is_accepted(self) -> None:
        """KRaft re-writes the record for an unchanged level (A.6 step 6); so does shardwise."""
        assert reason(UPG_LEVELS, [up(LEASE_DISCOVERY, 2)]) is None
        assert reason(UPG_LEVELS, [up(LEASE_DISCOVERY, 2, SAFE)]) is None

    def test_the_failing_update_is_returned(self) -> None:
        bad = up(LEASE_DISCOVERY, -1)
        problem = validate_updates(NOTHING, [up(LEASE_ASSIGNMENT, 1), bad], [])
        assert problem is not None
        assert problem[0] == bad

    # -- each rule --------------------------------------------------------------------------------------

    def test_unknown_upgrade_type(self) -> None:
        assert reason(NOTHING, [up(LEASE_DISCOVERY, 2, UpgradeType.UNKNOWN)]) == invalid(
            2, LEASE_DISCOVERY, "shardwise does not support the given upgrade type."
        )

    def test_negative_level(self) -> None:
        assert reason(NOTHING, [up(LEASE_DISCOVERY, -1)]) == invalid(
            -1, LEASE_DISCOVERY, "A feature version cannot be less than 0."
        )

    def test_unknown_feature(self) -> None:
        assert reason(NOTHING, [up("foo", 1)]) == invalid(
            1,
            "foo",
            "This release of shardwise does not know this feature (it knows lease.assignment, lease.discovery, "
            "table.layout, state.format).",
        )

    def test_unknown_level(self) -> None:
        assert reason(NOTHING, [up(LEASE_ASSIGNMENT, 3)]) == invalid(
            3, LEASE_ASSIGNMENT, "This release of shardwise only knows versions 0-2 of this feature."
        )

    def test_worker_range_names_the_worker(self) -> None:
        workers = [worker("w1"), worker("w2", lease_discovery=R(0, 1))]
        assert reason(UPG_LEVELS, [up(LEASE_ASSIGNMENT, 2)], workers) is None
        assert reason(V2X_LEVELS, [up(LEASE_DISCOVERY, 2)], workers) == invalid(
            2, LEASE_DISCOVERY, "Worker w2 only supports versions 0-1"
        )

    def test_workers_are_checked_in_id_order(self) -> None:
        workers = [worker("w9", lease_discovery=R(0, 1)), worker("w2", lease_discovery=R(0, 0))]
        assert reason(V2X_LEVELS, [up(LEASE_DISCOVERY, 2)], workers) == invalid(
            2, LEASE_DISCOVERY, "Worker w2 does not support this feature."
        )

    def test_a_worker_that_does_not_support_the_feature(self) -> None:
        workers = [WorkerSupport("w3", {LEASE_ASSIGNMENT: R(0, 1)})]  # did not advertise lease.discovery
        assert reason(V2X_LEVELS, [up(LEASE_DISCOVERY, 2)], workers) == invalid(
            2, LEASE_DISCOVERY, "Worker w3 does not support this feature."
        )

    def test_a_worker_above_the_level_refuses_a_downgrade(self) -> None:
        workers = [worker("w1", lease_assignment=R(2, 2))]
        assert reason(V3X_LEVELS, [up(LEASE_ASSIGNMENT, 1, SAFE)], workers) == invalid(
            1, LEASE_ASSIGNMENT, "Worker w1 only supports versions 2-2"
        )

    def test_downgrade_without_flag(self) -> None:
        assert reason(UPG_LEVELS, [up(LEASE_DISCOVERY, 1)]) == invalid(1, LEASE_DISCOVERY, DOWNGRADE_WITHOUT_FLAG)

    @pytest.mark.parametrize("kind", [SAFE, UNSAFE])
    def test_downgrade_to_a_newer_version(self, kind: UpgradeType) -> None:
        assert reason(V2X_LEVELS, [up(LEASE_DISCOVERY, 2, kind)]) == invalid(
            2, LEASE_DISCOVERY, "Can't downgrade to a newer version."
        )

    def test_dependencies_are_checked_against_the_proposed_set(self) -> None:
        assert reason(V2X_LEVELS, [up(LEASE_ASSIGNMENT, 2)]) == invalid(
            2, LEASE_ASSIGNMENT, "lease.assignment could not be set to 2 because it depends on lease.discovery level 2."
        )
        assert reason(V2X_LEVELS, [up(LEASE_ASSIGNMENT, 2), up(LEASE_DISCOVERY, 2)]) is None
        assert reason(V2X_LEVELS, [up(LEASE_DISCOVERY, 2), up(LEASE_ASSIGNMENT, 2)]) is None
        assert reason(UPG_LEVELS, [up(LEASE_ASSIGNMENT, 2)]) is None

    def test_a_downgrade_may_not_break_a_dependent(self) -> None:
        assert reason(V3X_LEVELS, [up(LEASE_DISCOVERY, 1, SAFE)]) == invalid(
            1,
            LEASE_DISCOVERY,
            "lease.discovery could not be set to 1 because lease.assignment=2 depends on lease.discovery level 2.",
        )
        assert reason(V3X_LEVELS, [up(LEASE_DISCOVERY, 1, SAFE), up(LEASE_ASSIGNMENT, 1, SAFE)]) is None

    def test_unsafe_does_not_skip_dependencies(self) -> None:
        assert reason(V3X_LEVELS, [up(LEASE_DISCOVERY, 1, UNSAFE)]) is not None

    def test_lossy_downgrade_from_3x_needs_unsafe(self) -> None:
        final = UpdateContext(client_version=ClientVersion.V3X)
        refusal = reason(V3X_LEVELS, [up(LEASE_ASSIGNMENT, 1, SAFE)], context=final)
        assert refusal is not None
        assert refusal.startswith(
            invalid(1, LEASE_ASSIGNMENT, "Refusing to perform the requested downgrade because it might lose data")
        )
        assert "CLIENT_VERSION_3X" in refusal
        assert "--unsafe" in refusal
        assert reason(V3X_LEVELS, [up(LEASE_ASSIGNMENT, 1, UNSAFE)], context=final) is None
        # with rollback still possible the downgrade is safe
        rollback = UpdateContext(client_version=ClientVersion.V3X_WITH_ROLLBACK)
        assert reason(V3X_LEVELS, [up(LEASE_ASSIGNMENT, 1, SAFE)], context=rollback) is None

    @pytest.mark.parametrize("feature", [LEASE_ASSIGNMENT, LEASE_DISCOVERY])
    @pytest.mark.parametrize("kind", [SAFE, UNSAFE])
    def test_reflected_features_cannot_go_to_zero(self, feature: str, kind: UpgradeType) -> None:
        refusal = reason(V2X_LEVELS, [up(feature, 0, kind)])
        assert refusal == invalid(
            0,
            feature,
            f"{feature} is kept in KCL's Migration3.0 item, which has no 'off' state; there is no safe path to "
            "level 0. Downgrade it to 1 instead.",
        )

    def test_a_reflected_feature_not_finalized_may_stay_at_zero(self) -> None:
        assert reason(NOTHING, [up(LEASE_ASSIGNMENT, 0, SAFE)]) is None

    def test_layout_has_no_path_back_to_separate_tables(self) -> None:
        fixed = UpdateContext(layout_fixed=True)
        for level in (0, 1):
            assert reason(V2X_LEVELS, [up(TABLE_LAYOUT, level, SAFE)], context=fixed) == invalid(
                level,
                TABLE_LAYOUT,
                "There is no safe path from the single-table layout back to separate tables: the coordinator and "
                "worker-metrics items cannot be moved out of the lease table while workers run.",
            )
            # not even unsafely
            assert reason(V2X_LEVELS, [up(TABLE_LAYOUT, level, UNSAFE)], context=fixed) is not None

    def test_a_fixed_layout_cannot_change(self) -> None:
        fixed = UpdateContext(layout_fixed=True)
        legacy = {**V2X_LEVELS, TABLE_LAYOUT: 1}
        assert reason(legacy, [up(TABLE_LAYOUT, 2)], context=fixed) == invalid(
            2,
            TABLE_LAYOUT,
            "The application's coordinator items already live in the legacy layout; this release cannot move them. "
            "Only an application without coordinator items can choose its layout.",
        )
        assert reason(legacy, [up(TABLE_LAYOUT, 0, SAFE)], context=fixed) is not None
        assert reason(legacy, [up(TABLE_LAYOUT, 1)], context=fixed) is None  # unchanged: fine

    def test_an_unfixed_layout_may_be_chosen_among_the_backends_layouts(self) -> None:
        assert reason(NOTHING, [up(TABLE_LAYOUT, 1)]) is None
        assert reason(NOTHING, [up(TABLE_LAYOUT, 2)]) is None
        sqlite = UpdateContext(layout_choices=(2,))
        assert reason(NOTHING, [up(TABLE_LAYOUT, 1)], context=sqlite) == invalid(
            1, TABLE_LAYOUT, "This backend has only the single-table layout (2)."
        )
        assert reason(NOTHING, [up(TABLE_LAYOUT, 2)], context=sqlite) is None

    def test_unsafe_downgrade_bypasses_worker_ranges(self) -> None:
        workers = [worker("w1", lease_assignment=R(2, 2))]
        assert reason(V3X_LEVELS, [up(LEASE_ASSIGNMENT, 1, SAFE)], workers) is not None
        assert reason(V3X_LEVELS, [up(LEASE_ASSIGNMENT, 1, UNSAFE)], workers) is None

    # -- the order ---------------------------------------------------------------------------------------

    def test_order_type_before_negative(self) -> None:
        assert "upgrade type" in (reason(NOTHING, [up(LEASE_DISCOVERY, -1, UpgradeType.UNKNOWN)]) or "")

    def test_order_negative_before_unknown_feature(self) -> None:
        assert "cannot be less than 0" in (reason(NOTHING, [up("foo", -1)]) or "")

    def test_order_unknown_feature_and_level_before_workers(self) -> None:
        workers = [worker("w1", lease_assignment=R(0, 0))]
        assert "does not know this feature" in (reason(NOTHING, [up("foo", 1)], workers) or "")
        assert "only knows versions 0-2" in (reason(NOTHING, [up(LEASE_ASSIGNMENT, 5)], workers) or "")

    def test_order_workers_before_the_downgrade_flag(self) -> None:
        workers = [worker("w2", lease_discovery=R(2, 2))]
        assert reason(UPG_LEVELS, [up(LEASE_DISCOVERY, 1)], workers) == invalid(
            1, LEASE_DISCOVERY, "Worker w2 only supports versions 2-2"
        )

    def test_order_per_feature_checks_before_dependencies(self) -> None:
        updates = [up(LEASE_ASSIGNMENT, 2), up(LEASE_DISCOVERY, 1)]
        assert reason(UPG_LEVELS, updates) == invalid(1, LEASE_DISCOVERY, DOWNGRADE_WITHOUT_FLAG)

    def test_order_dependencies_before_no_path(self) -> None:
        fixed = UpdateContext(layout_fixed=True, client_version=ClientVersion.V3X)
        updates = [up(LEASE_DISCOVERY, 1, SAFE), up(TABLE_LAYOUT, 1, SAFE)]
        assert "depends on" in (reason(V3X_LEVELS, updates, context=fixed) or "")

    def test_order_updates_in_request_order_for_per_feature_checks(self) -> None:
        updates = [up(LEASE_DISCOVERY, -1), up("foo", 1)]
        assert reason(NOTHING, updates) == invalid(-1, LEASE_DISCOVERY, "A feature version cannot be less than 0.")
        assert reason(NOTHING, list(reversed(updates))) == invalid(
            1,
            "foo",
            "This release of shardwise does not know this feature (it knows lease.assignment, lease.discovery, "
            "table.layout, state.format).",
        )


class TestDependencyProblem:
    def test_only_changed_features_are_checked(self) -> None:
        broken = {LEASE_ASSIGNMENT: 2, LEASE_DISCOVERY: 1}
        assert dependency_problem(broken, []) is None
        assert dependency_problem(broken, [TABLE_LAYOUT]) is None
        assert dependency_problem(broken, [LEASE_ASSIGNMENT]) == (
            LEASE_ASSIGNMENT,
            2,
            "lease.assignment could not be set to 2 because it depends on lease.discovery level 2",
        )
        assert dependency_problem(broken, [LEASE_DISCOVERY]) == (
            LEASE_DISCOVERY,
            1,
            "lease.discovery could not be set to 1 because lease.assignment=2 depends on lease.discovery level 2",
        )

    def test_unknown_features_have_no_dependencies(self) -> None:
        assert dependency_problem({"foo": 7}, ["foo"]) is None


# ===================================================================================== Migration3.0 <-> levels


class TestClientVersionMapping:
    @pytest.mark.parametrize(
        ("version", "assignment", "discovery"),
        [
            (ClientVersion.V2X, 1, 1),
            (ClientVersion.INIT, 1, 1),
            (ClientVersion.UPGRADE_FROM_2X, 1, 2),
            (ClientVersion.V3X_WITH_ROLLBACK, 2, 2),
            (ClientVersion.V3X, 2, 2),
        ],
    )
    def test_levels_from_client_version(self, version: ClientVersion, assignment: int, discovery: int) -> None:
        assert levels_from_client_version(version) == {LEASE_ASSIGNMENT: assignment, LEASE_DISCOVERY: discovery}

    @pytest.mark.parametrize(
        ("assignment", "discovery", "expected"),
        [
            (1, 1, ClientVersion.V2X),
            (0, 0, ClientVersion.V2X),
            (1, 2, ClientVersion.UPGRADE_FROM_2X),
            (0, 2, ClientVersion.UPGRADE_FROM_2X),
            (2, 2, ClientVersion.V3X_WITH_ROLLBACK),
        ],
    )
    def test_client_version_for_new_levels(self, assignment: int, discovery: int, expected: ClientVersion) -> None:
        levels = {LEASE_ASSIGNMENT: assignment, LEASE_DISCOVERY: discovery, TABLE_LAYOUT: 2}
        assert client_version_for(levels, None) == expected

    def test_3x_stays_3x_and_a_change_leaves_it(self) -> None:
        assert client_version_for(V3X_LEVELS, ClientVersion.V3X) is ClientVersion.V3X
        assert client_version_for(UPG_LEVELS, ClientVersion.V3X) is ClientVersion.UPGRADE_FROM_2X
        assert client_version_for(V3X_LEVELS, ClientVersion.V2X) is ClientVersion.V3X_WITH_ROLLBACK

    @given(st.sampled_from(list(ClientVersion)))
    def test_round_trip_for_every_client_version(self, version: ClientVersion) -> None:
        assert client_version_for(levels_from_client_version(version), version) is version

    @given(
        st.sampled_from([(1, 1), (1, 2), (2, 2)]),
        st.one_of(st.none(), st.sampled_from(list(ClientVersion))),
    )
    def test_levels_survive_the_round_trip(self, pair: tuple[int, int], current: ClientVersion | None) -> None:
        """Every dependency-consistent pair of reflected levels is exactly what its client version means."""
        levels = {LEASE_ASSIGNMENT: pair[0], LEASE_DISCOVERY: pair[1]}
        assert levels_from_client_version(client_version_for(levels, current)) == levels


# ============================================================================================ FeaturesConfig


class TestFeaturesConfig:
    def test_defaults(self) -> None:
        config = FeaturesConfig()
        assert config.pinned_release == CURRENT_RELEASE
        assert config.parsed_max_levels() == {}

    def test_release_and_max_levels(self) -> None:
        config = FeaturesConfig(release="0.2.5", max_levels=" lease.assignment = 1 , table.layout=2")
        assert config.pinned_release == "0.2"
        assert config.parsed_max_levels() == {LEASE_ASSIGNMENT: 1, TABLE_LAYOUT: 2}

    @pytest.mark.parametrize("release", ["9.9", "x", "", "0"])
    def test_unknown_release(self, release: str) -> None:
        with pytest.raises(ConfigurationError, match=r"features\.release must be a shardwise release \(0\.1, 0\.2"):
            FeaturesConfig(release=release)

    @pytest.mark.parametrize(
        "spec", ["lease.assignment", "lease.assignment=x", "lease.assignment=-1", "lease.assignment=1,b"]
    )
    def test_unparsable_max_levels(self, spec: str) -> None:
        with pytest.raises(ConfigurationError, match=r"features\.max_levels must look like"):
            FeaturesConfig(max_levels=spec)

    @pytest.mark.parametrize(("spec", "name"), [("foo=1", "foo"), ("=1", ""), ("lease.assignment=1,x=2", "x")])
    def test_unknown_feature_in_max_levels(self, spec: str, name: str) -> None:
        with pytest.raises(
            ConfigurationError, match=re.escape(f"features.max_levels names unknown feature '{name}'; known: ")
        ):
            FeaturesConfig(max_levels=spec)


# ================================================================================================ properties

FEATURES = [*REGISTRY, "foo"]
KINDS = list(UpgradeType)
ranges_st = st.builds(lambda a, b: SupportedRange(min(a, b), max(a, b)), st.integers(0, 3), st.integers(0, 3)).map(
    lambda r: r if r.max_level > 0 else SupportedRange(0, 0)
)
workers_st = st.lists(
    st.builds(
        WorkerSupport,
        st.sampled_from(["w1", "w2", "w3", "w4"]),
        st.dictionaries(st.sampled_from(list(REGISTRY)), ranges_st),
    ),
    max_size=3,
    unique_by=lambda w: w.worker_id,
)
finalized_st = st.fixed_dictionaries({name: st.integers(0, feature.max_level) for name, feature in REGISTRY.items()})
updates_st = st.lists(
    st.builds(FeatureUpdate, st.sampled_from(FEATURES), st.integers(-1, 3), st.sampled_from(KINDS)),
    max_size=4,
    unique_by=lambda u: u.feature,
)
context_st = st.builds(
    UpdateContext,
    client_version=st.one_of(st.none(), st.sampled_from(list(ClientVersion))),
    layout_fixed=st.booleans(),
    layout_choices=st.sampled_from([(1, 2), (2,)]),
)


@given(finalized_st, updates_st, workers_st, context_st)
def test_validation_is_deterministic_and_all_or_nothing(
    finalized: dict[str, int],
    updates: list[FeatureUpdate],
    workers: list[WorkerSupport],
    context: UpdateContext,
) -> None:
    verdict = validate_updates(finalized, updates, workers, context)
    assert validate_updates(dict(finalized), list(updates), list(workers), context) == verdict
    # the request is accepted or refused as a whole, whatever order its updates come in
    shuffled = validate_updates(finalized, list(reversed(updates)), list(reversed(workers)), context)
    assert (shuffled is None) == (verdict is None)
    if verdict is not None:
        update, message = verdict
        assert update in updates
        assert message.startswith(f"Invalid update version {update.level} for feature {update.feature}. ")
        return
    proposed = {**finalized, **{u.feature: u.level for u in updates}}
    assert dependency_problem(proposed, [u.feature for u in updates]) is None
    for update in updates:
        assert update.upgrade_type is not UpgradeType.UNKNOWN
        assert update.feature in REGISTRY
        assert 0 <= update.level <= REGISTRY[update.feature].max_level
        current = finalized[update.feature]
        if update.upgrade_type is UPGRADE:
            assert update.level >= current
        else:
            assert update.level <= current
        if update.upgrade_type is not UNSAFE:
            for live in workers:
                assert update.level in live.range_of(update.feature), (live, update)


@given(finalized_st, updates_st, workers_st, st.sampled_from([UPGRADE, SAFE]))
def test_an_accepted_upgrade_or_safe_downgrade_stays_inside_the_fleets_range(
    finalized: dict[str, int], updates: list[FeatureUpdate], workers: list[WorkerSupport], kind: UpgradeType
) -> None:
    request = [FeatureUpdate(u.feature, u.level, kind) for u in updates]
    if validate_updates(finalized, request, workers) is not None:
        return
    for update in request:
        span = fleet_range(update.feature, workers)
        assert span is None or update.level in span, (update, span)
