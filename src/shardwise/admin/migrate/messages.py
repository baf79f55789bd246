"""``KclMigrationTool.py``'s messages, word for word as the tool prints them (kcl-protocol.md §1.2–§1.5), typos
included, so that runbooks that look for them keep working.

The functions fill in what the tool fills in: a table name, an error's text (``str()`` of the botocore error,
as the tool prints it), the operation (``Rollback`` / ``Roll-forward``). Shardwise's own lines are written
where they are produced.
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "ACCESS_DENIED",
    "ALREADY_2X",
    "ARGS_ROLLBACK",
    "ARGS_ROLLBACK_LEGACY",
    "ARGS_ROLLFORWARD",
    "ARGS_ROLLFORWARD_LEGACY",
    "ARGS_STATUS",
    "GSI_NAME",
    "IN_USE",
    "MODIFIED_BY_ROLLBACK",
    "MODIFIED_BY_ROLLFORWARD",
    "NOT_FOUND",
    "READ_RETRY",
    "ROLLBACK_ALREADY_DONE",
    "ROLLBACK_CONDITION_FAILED",
    "ROLLBACK_DONE_FROM_3X",
    "ROLLBACK_DONE_FROM_UPGRADE",
    "ROLLBACK_NOT_IN_PROGRESS",
    "ROLLBACK_REFUSED_3X",
    "ROLLFORWARD_ALREADY_MIGRATED",
    "ROLLFORWARD_CONDITION_FAILED",
    "ROLLFORWARD_INITIATED",
    "ROLLFORWARD_NOT_IN_PROGRESS",
    "ROLLFORWARD_NOT_ROLLED_BACK",
    "THROUGHPUT_EXCEEDED",
    "UNKNOWN",
    "Mode",
    "coordinator_table_not_found",
    "gsi_absent",
    "gsi_check_error",
    "gsi_delete_error",
    "gsi_deleting",
    "gsi_in_use",
    "gsi_lease_table_missing",
    "gsi_not_found",
    "lease_table_not_found",
    "metrics_table_absent",
    "metrics_table_access_denied",
    "metrics_table_check_error",
    "metrics_table_client_error",
    "metrics_table_deleting",
    "metrics_table_error",
    "operation",
    "rollback_error",
    "rollforward_error",
    "rolling_back",
    "table_check_error",
    "table_missing",
]

#: The tool's ``--mode``.
Mode = Literal["rollback", "rollforward"]

#: KCL 3.x's owner index on the lease table (the name the tool deletes and prints).
GSI_NAME = "LeaseOwnerToLeaseKeyIndex"
#: ``mb`` of the ``Migration3.0`` item after the tool's write.
MODIFIED_BY_ROLLBACK = "KclMigrationTool-rollback"
MODIFIED_BY_ROLLFORWARD = "KclMigrationTool-rollforward"
#: What the tool records for a missing ``cv`` or ``mb``.
UNKNOWN = "Unknown"

#: The service error codes the tool tells apart (``ClientError.response["Error"]["Code"]``).
NOT_FOUND = "ResourceNotFoundException"
IN_USE = "ResourceInUseException"
ACCESS_DENIED = "AccessDeniedException"
THROUGHPUT_EXCEEDED = "ProvisionedThroughputExceededException"

ARGS_ROLLFORWARD = "For rollforward mode, application_name must be provided."
ARGS_ROLLBACK = "For rollback mode, either application_name or lease_table_name must be provided."
ARGS_ROLLFORWARD_LEGACY = (
    "For rollforward mode, either application_name or coordinator_state_table_name must be provided."
)
ARGS_ROLLBACK_LEGACY = (
    "For rollback mode, either application_name or all three table names (lease_table_name, "
    "coordinator_state_table_name, and worker_metrics_table_name) must be provided."
)
ARGS_STATUS = "For status, either application_name or lease_table_name must be provided."

ALREADY_2X = (
    "Your KCL application already runs in a mode compatible with KCL 2.x. You can deploy the code with the "
    "previous KCL version if you still experience an issue."
)
ROLLBACK_REFUSED_3X = "Cannot roll back the KCL application. It is not in a state that supports rollback."
ROLLBACK_NOT_IN_PROGRESS = (
    "Migration to KCL 3.0 not in progress or application_name / coordinator_state_table_name is incorrect. "
    "Please double check and run again with correct arguments."
)
ROLLFORWARD_NOT_ROLLED_BACK = "Cannot roll-forward application. It is not in a rolled back state."
ROLLFORWARD_ALREADY_MIGRATED = "Cannot roll-forward the KCL application. Application has already migrated."
ROLLFORWARD_NOT_IN_PROGRESS = (
    "Cannot roll-forward because migration to KCL 3.0 is not in progress or application_name / "
    "coordinator_state_table_name is incorrect. Please double check and run again with correct arguments."
)
ROLLBACK_CONDITION_FAILED = (
    "Unable to rollback, as application is not in a state that allows rollback."
    "Ensure that the given application_name or coordinator_state_table_name is correct and you have followed "
    "all prior migration steps."
)
ROLLFORWARD_INITIATED = (
    "Roll-forward has been initiated. KCL application will monitor for 3.0 readiness and automatically switch "
    "to 3.0 functionality when readiness criteria have been met."
)
ROLLFORWARD_CONDITION_FAILED = (
    "Unable to roll-forward because application is not in rolled back state. Ensure that the given "
    "application_name or coordinator_state_table_name is correct and you have followed all prior migration "
    "steps."
)
ROLLBACK_DONE_FROM_UPGRADE = (
    "\nRollback completed. Your application was running 2x compatible functionality.",
    "Please rollback to your previous application binaries by deploying the code with your previous KCL version.",
)
ROLLBACK_DONE_FROM_3X = (
    "\nRollback completed. Your KCL Application was running 3x functionality and will rollback to 2x compatible "
    "functionality.",
    "If you don't see mitigation after a short period of time, please rollback to your previous application "
    "binaries by deploying the code with your previous KCL version.",
)
ROLLBACK_ALREADY_DONE = (
    "\nApplication was already rolled back. Any KCLv3 resources that could be deleted were cleaned up to avoid "
    "charges until the application can be rolled forward with migration.",
)
READ_RETRY = "Please resolve the issue and run the KclMigrationTool again."


def operation(mode: Mode) -> str:
    return "Rollback" if mode == "rollback" else "Roll-forward"


def table_missing(table: str) -> str:
    return f"Table '{table}' does not exist."


def table_check_error(table: str, error: str) -> str:
    return f"An error occurred while checking table '{table}': {error}."


def lease_table_not_found(mode: Mode, table: str) -> str:
    return (
        f"{operation(mode)} failed. Could not find a KCL Application DDB lease table with name {table}. Please "
        "pass in the correct application_name and/or lease_table_name that matches your KCL application "
        "configuration."
    )


def coordinator_table_not_found(mode: Mode, table: str) -> str:
    return (
        f"{operation(mode)} failed. Could not find a coordinator state table {table}. Please pass in the correct "
        "application_name or coordinator_state_table_name that matches your KCL application configuration."
    )


def rolling_back(table: str) -> str:
    return f"Rolling back client version in table '{table}'..."


def rollback_error(error: str) -> str:
    return (
        f"An unexpected error occurred while rolling back: {error}Please resolve and run this migration script again."
    )


def rollforward_error(error: str) -> str:
    return f"Unable to roll-forward due to error: {error}. Please resolve and run this migration script again."


def gsi_absent(table: str) -> str:
    return (
        f"GSI {GSI_NAME} is not present on lease table {table}. It may already be successfully deleted. Or if "
        "lease table name is incorrect, please re-run the KclMigrationTool with correct application_name or "
        "lease_table_name."
    )


def gsi_lease_table_missing(table: str) -> str:
    return (
        f"Lease table {table} does not exist, please check application_name or lease_table_name configuration "
        "and try again."
    )


def gsi_check_error(table: str, error: str) -> str:
    return (
        f"An unexpected error occurred while checking if GSI {GSI_NAME} exists on lease table {table}: {error}. "
        "Please rectify the error and try again."
    )


def gsi_deleting(table: str) -> str:
    return f"Deleting GSI '{GSI_NAME}' from table '{table}'..."


def gsi_not_found(table: str) -> str:
    return f"{GSI_NAME} not found or table '{table}' not found."


def gsi_in_use(table: str) -> str:
    return f"Unable to delete GSI: '{table}' is currently being modified."


def gsi_delete_error(table: str, error: str) -> str:
    return (
        f"An unexpected error occurred while deleting GSI {GSI_NAME} on lease table {table}: {error}. Please "
        "manually confirm the GSI is removed from the lease table, or resolve the error and rerun the migration "
        "script."
    )


def metrics_table_absent(table: str) -> str:
    return (
        f"Worker metrics table {table} does not exist. It may already be successfully deleted. Please check that "
        "the application_name or worker_metrics_table_name is correct. If not, correct this and rerun the "
        "migration script."
    )


def metrics_table_check_error(table: str, error: str) -> str:
    return (
        f"An unexpected error occurred when checking if {table} table exists: {error}. Please manually confirm "
        "the table is deleted, or resolve the error and rerun the migration script."
    )


def metrics_table_deleting(table: str) -> str:
    return f"Deleting worker metrics table {table}..."


def metrics_table_access_denied(table: str) -> str:
    return (
        f"No permissions to delete table {table}. Please manually delete it if you want to avoid any charges "
        "until you are ready to rollforward with migration."
    )


def metrics_table_client_error(error: str) -> str:
    return (
        f"An unexpected client error occurred while deleting worker metrics table: {error}. Please manually "
        "confirm the table is deleted, or resolve the error and rerun the migration script."
    )


def metrics_table_error(error: str) -> str:
    return (
        f"An unexpected error occurred while deleting worker metrics table: {error}. Please manually confirm the "
        "table is deleted, or resolve the error and rerun the migration script."
    )
