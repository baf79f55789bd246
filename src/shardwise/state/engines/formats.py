"""The format decision of :func:`~shardwise.state.engines.open_local_store`, as a pure function over what was
found on disk (:class:`Found`) — the engines probe, :func:`decide` decides, a thin shell applies.

Rules, first match wins:

1. nothing on disk → create (leftover sidecar or marker files without a store: wiped as corrupt);
2. the other engine's files → wipe (``WIPED_ENGINE``);
3. unreadable (truncated, not a database, a bad header) → wipe (``WIPED_CORRUPT``);
4. a level this worker cannot read (above ``readable_level``, or unknown) → wipe (``WIPED_NEWER``);
5. level 1 left with its ``.committing`` marker, a bad sidecar, or data without a sidecar → wipe (``WIPED_CORRUPT``);
6. level 1 → open (writing 1) or upgrade (writing 2: import the sidecar, remove it);
7. level 2 → open (writing 2; a stale sidecar or marker from an interrupted conversion is removed) or convert down
   (writing 1: export the position to a sidecar, drop it from the store).
"""

from __future__ import annotations

from dataclasses import dataclass

from shardwise.state.port import FORMAT_IN_STORE, FORMAT_SIDECAR, KNOWN_FORMATS, OpenOutcome

__all__ = ["Action", "Decision", "Found", "decide"]


class Action:
    CREATE = "create"
    OPEN = "open"
    UPGRADE = "upgrade"
    CONVERT_DOWN = "convert-down"
    WIPE = "wipe"


@dataclass(frozen=True, slots=True)
class Found:
    """What is in a shard's store directory."""

    engines: frozenset[str]  # engines whose files are there
    level: int | None = None  # the format level of the requested engine's store (None: not read)
    problem: str | None = None  # why the requested engine's store cannot be read
    empty: bool = True  # no committed keys
    sidecar: bool = False  # a .checkpoint file exists
    sidecar_problem: str | None = None  # why it does not parse
    committing: bool = False  # the level-1 .committing marker exists

    @property
    def leftovers(self) -> bool:
        return self.sidecar or self.committing


@dataclass(frozen=True, slots=True)
class Decision:
    action: str  # an Action value
    outcome: str  # an OpenOutcome value
    detail: str  # one line (empty for CREATED/OPENED)
    cleanup: bool = False  # OPEN: remove a stale sidecar/marker left by an interrupted conversion


def decide(found: Found, *, engine: str, write_level: int, readable_level: int, where: str) -> Decision:
    """What to do with the store described by ``found``; ``where`` names it in the detail line."""
    if write_level not in KNOWN_FORMATS or not write_level <= readable_level:
        raise ValueError(f"cannot write state.format {write_level} while reading up to {readable_level}")

    def wipe(outcome: str, what: str) -> Decision:
        return Decision(Action.WIPE, outcome, f"{where}: found {what}; wiping it, to be restored from the changelog")

    if engine not in found.engines:
        others = sorted(found.engines)
        if others:
            return wipe(OpenOutcome.WIPED_ENGINE, f"a {'/'.join(others)} store, but state.engine is {engine}")
        if found.leftovers:
            return wipe(OpenOutcome.WIPED_CORRUPT, "checkpoint or marker files without a store")
        return Decision(Action.CREATE, OpenOutcome.CREATED, "")
    if len(found.engines) > 1:
        others = sorted(found.engines - {engine})
        return wipe(OpenOutcome.WIPED_ENGINE, f"{'/'.join(others)} files beside the {engine} store")
    if found.problem is not None or found.level is None:
        return wipe(OpenOutcome.WIPED_CORRUPT, f"an unreadable {engine} store ({found.problem or 'no format level'})")
    level = found.level
    if level not in KNOWN_FORMATS or level > readable_level:
        known = "unknown to this worker" if level not in KNOWN_FORMATS else f"above its {readable_level}"
        return wipe(OpenOutcome.WIPED_NEWER, f"a {engine} store at state.format {level} ({known})")
    if level == FORMAT_SIDECAR:
        if found.committing:
            return wipe(OpenOutcome.WIPED_CORRUPT, "a level-1 store left mid-commit (.committing marker)")
        if found.sidecar_problem is not None:
            return wipe(
                OpenOutcome.WIPED_CORRUPT, f"a level-1 store whose .checkpoint is bad ({found.sidecar_problem})"
            )
        if not found.sidecar and not found.empty:
            return wipe(OpenOutcome.WIPED_CORRUPT, "a level-1 store with data but no .checkpoint")
        if write_level == FORMAT_SIDECAR:
            return Decision(Action.OPEN, OpenOutcome.OPENED, "")
        return Decision(
            Action.UPGRADE,
            OpenOutcome.UPGRADED,
            f"{where}: found a {engine} store at state.format 1; importing its .checkpoint into the store "
            "(state.format 2) and removing the file",
        )
    assert level == FORMAT_IN_STORE
    if write_level == FORMAT_IN_STORE:
        return Decision(Action.OPEN, OpenOutcome.OPENED, "", cleanup=found.leftovers)
    return Decision(
        Action.CONVERT_DOWN,
        OpenOutcome.CONVERTED_DOWN,
        f"{where}: found a {engine} store at state.format 2 while writing state.format 1; exporting its "
        "position to a .checkpoint file and dropping it from the store",
    )
