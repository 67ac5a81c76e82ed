"""The tables. Every timestamp is UTC; every status is an enum stored by its value."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from retrainer import clock
from retrainer.db.base import Base, BigId, JSONType, enum_column


class PredictionStatus(enum.StrEnum):
    PREDICTED = "predicted"
    RUNNING = "running"
    COMPLETED = "completed"


class PredictionKind(enum.StrEnum):
    """How a prediction's error is measured: the values of retrainer.models.base.Live (db sits below
    models and cannot import it; tests/retrainer/db/test_migrations.py checks the two agree)."""

    REGRESSION = "regression"
    CLASSIFICATION = "classification"
    FORECAST = "forecast"


class VersionStatus(enum.StrEnum):
    TRAINED = "trained"
    ACTIVE = "active"
    ARCHIVED = "archived"
    FAILED = "failed"


class RunStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"


class Trigger(enum.StrEnum):
    SCHEDULE = "schedule"
    ACCURACY = "accuracy"
    DRIFT = "drift"
    ACCEPT_RATE = "accept_rate"
    ERRORS = "errors"
    NEW_SAMPLES = "new_samples"
    EVENT = "event"
    MANUAL = "manual"


class RequestStatus(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"  # a run works on it (seed 003's word)
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Priority(enum.StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"


def _now() -> datetime:
    return clock.now()


class PredictionRecord(Base):
    """One prediction a model served and, once known, what actually happened."""

    __tablename__ = "prediction_records"
    __table_args__ = (
        sa.Index("ix_prediction_records_model_status_at", "model", "status", "predicted_at"),
        sa.Index("ix_prediction_records_model_at", "model", "predicted_at"),  # the drift check's recent inputs
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    prediction_id: Mapped[str] = mapped_column(sa.String(64), unique=True)
    model: Mapped[str] = mapped_column(sa.String(100))
    # No foreign key: a serving stack elsewhere logs predictions (prediction events) for versions this
    # database may never have registered (trained outside it, or archived and pruned there).
    version_id: Mapped[str | None] = mapped_column(sa.String(120))
    # Stored, not looked up from the configuration when the outcome arrives: the error keeps the
    # meaning it had when the prediction was served, even if the model's family changes later.
    kind: Mapped[PredictionKind] = mapped_column(enum_column(PredictionKind, "kind"), default=PredictionKind.REGRESSION)
    features: Mapped[dict[str, Any]]
    predicted: Mapped[float]  # classification: the predicted class (a whole number >= 0)
    proba: Mapped[dict[str, float] | None] = mapped_column(JSONType)  # classification: class -> probability
    confidence: Mapped[float | None]
    segments: Mapped[dict[str, str]] = mapped_column(JSONType, default=dict)  # free keys -> short text
    # A second target served beside the first (ROAS beside CTR): name -> {"predicted": x, "actual": y}
    targets: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    actual: Mapped[float | None]
    error: Mapped[float | None]  # regression, forecast: |actual - predicted|; classification: 1 if wrong else 0
    status: Mapped[PredictionStatus] = mapped_column(enum_column(PredictionStatus, "status"), default=PredictionStatus.PREDICTED)
    predicted_at: Mapped[datetime] = mapped_column(default=_now)
    completed_at: Mapped[datetime | None]


NO_VERSION = ""  # live_accuracy_hours.version_id of a prediction logged without one


class LiveAccuracyHour(Base):
    """Additive sums of every live metric per model, version, hour of predicted_at and kind: what
    services/accuracy.py reads instead of scanning prediction_records. Kept by record_outcome in the
    outcome's own transaction (services/live_rollup.py), so it always equals the completed records.

    The bucket is the primary key. A prediction without a version is stored under NO_VERSION ('',
    which validation never lets a version id be): NULLs are distinct in a unique index on both
    PostgreSQL (before NULLS NOT DISTINCT) and SQLite, so ON CONFLICT would never meet them."""

    __tablename__ = "live_accuracy_hours"

    model: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    version_id: Mapped[str] = mapped_column(sa.String(120), primary_key=True)
    hour: Mapped[datetime] = mapped_column(primary_key=True)  # the start of the hour (UTC)
    kind: Mapped[PredictionKind] = mapped_column(enum_column(PredictionKind, "kind"), primary_key=True)
    n: Mapped[int] = mapped_column(sa.BigInteger)
    # regression and forecast: e = actual - predicted
    sum_abs_err: Mapped[float]
    sum_sq_err: Mapped[float]
    sum_y: Mapped[float]  # regression: for R²
    sum_yy: Mapped[float]
    within_20pct: Mapped[int] = mapped_column(sa.BigInteger)
    within_6h: Mapped[int] = mapped_column(sa.BigInteger)
    within_12h: Mapped[int] = mapped_column(sa.BigInteger)
    within_24h: Mapped[int] = mapped_column(sa.BigInteger)
    # classification: right class; class 1 predicted and actual (precision/recall); a class above 1
    correct: Mapped[int] = mapped_column(sa.BigInteger)
    true_pos: Mapped[int] = mapped_column(sa.BigInteger)
    pred_pos: Mapped[int] = mapped_column(sa.BigInteger)
    actual_pos: Mapped[int] = mapped_column(sa.BigInteger)
    non_binary: Mapped[int] = mapped_column(sa.BigInteger)


class Observation(Base):
    """A labelled row producers write (a purchase, a recorded outcome): the default training source."""

    __tablename__ = "observations"
    __table_args__ = (
        sa.Index("ix_observations_model_event_time", "model", "event_time"),
        sa.Index("ix_observations_model_id", "model", "id"),  # a block's ids counted index-only (services/blocks.py)
        # only rows whose label was rewritten (updated_at is NULL on insert): a tiny index
        sa.Index("ix_observations_model_updated_at", "model", "updated_at",
                 postgresql_where=sa.text("updated_at IS NOT NULL"), sqlite_where=sa.text("updated_at IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    model: Mapped[str] = mapped_column(sa.String(100))
    event_id: Mapped[str | None] = mapped_column(sa.String(64), unique=True)  # idempotent re-delivery
    features: Mapped[dict[str, Any]]
    label: Mapped[float]
    event_time: Mapped[datetime]
    source: Mapped[str] = mapped_column(sa.String(32))
    created_at: Mapped[datetime] = mapped_column(default=_now)
    # Set by every UPDATE (a corrected label): a compacted block overlays the labels of rows updated after it.
    updated_at: Mapped[datetime | None] = mapped_column(onupdate=_now)


class ObservationBlock(Base):
    """A compacted, columnar copy of one model's observations with ids in (previous block's last_id,
    last_id]: ids, times, labels and every feature key as typed arrays in one payload
    (services/blocks.py). A cache of data that never changes after insert; labels that do are
    overlaid from observations.updated_at, and a block whose id range no longer counts `rows` rows
    (a delete, a late commit) is read from observations instead."""

    __tablename__ = "observation_blocks"
    __table_args__ = (sa.UniqueConstraint("model", "first_id", name="uq_observation_blocks_model_first_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    model: Mapped[str] = mapped_column(sa.String(100))
    first_id: Mapped[int] = mapped_column(sa.BigInteger)  # inclusive: the previous block's last_id + 1
    last_id: Mapped[int] = mapped_column(sa.BigInteger)
    rows: Mapped[int]
    id_hash: Mapped[int] = mapped_column(sa.BigInteger)  # sum(hashint8(id)) over the rows: a changed id set shows
    min_time: Mapped[datetime | None]  # of the rows' event times (None: none readable)
    max_time: Mapped[datetime | None]
    built_at: Mapped[datetime] = mapped_column(default=_now)
    payload: Mapped[bytes] = mapped_column(sa.LargeBinary)


class Feedback(Base):
    """One `feedback` event: accepts and rejects of a model's output in a learning cycle. A cycle's
    accept rate is the sum over its rows (services/accept_rate.py); event_id makes a re-delivery a no-op."""

    __tablename__ = "feedback"
    __table_args__ = (sa.Index("ix_feedback_model_recorded_at", "model", "recorded_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model: Mapped[str] = mapped_column(sa.String(100), index=True)
    cycle_id: Mapped[str] = mapped_column(sa.String(64))
    accepted: Mapped[int] = mapped_column(default=0)
    rejected: Mapped[int] = mapped_column(default=0)
    recorded_at: Mapped[datetime] = mapped_column(default=_now)
    event_id: Mapped[str | None] = mapped_column(sa.String(64), unique=True)


class ModelVersion(Base):
    """One trained model. At most one row per model has is_production, enforced by a partial index."""

    __tablename__ = "model_versions"
    __table_args__ = (
        sa.UniqueConstraint("model", "number", name="uq_model_versions_model_number"),
        sa.Index(
            "uq_model_versions_one_production",
            "model",
            unique=True,
            sqlite_where=sa.text("is_production = 1"),
            postgresql_where=sa.text("is_production"),
        ),
    )

    version_id: Mapped[str] = mapped_column(sa.String(120), primary_key=True)  # e.g. "ctr-v7"
    model: Mapped[str] = mapped_column(sa.String(100))
    number: Mapped[int]
    family: Mapped[str] = mapped_column(sa.String(64))
    algorithm: Mapped[str] = mapped_column(sa.String(64))
    status: Mapped[VersionStatus] = mapped_column(enum_column(VersionStatus, "status"), default=VersionStatus.TRAINED)
    is_production: Mapped[bool] = mapped_column(default=False)
    trained_at: Mapped[datetime] = mapped_column(default=_now)
    promoted_at: Mapped[datetime | None]
    num_training_samples: Mapped[int]
    training_duration_seconds: Mapped[float]
    hyperparameters: Mapped[dict[str, Any]]
    metrics: Mapped[dict[str, Any]]  # on its own holdout
    artifact_uri: Mapped[str] = mapped_column(sa.String(500))
    artifact_sha256: Mapped[str] = mapped_column(sa.String(64))
    training_window_start: Mapped[datetime | None]
    training_window_end: Mapped[datetime | None]
    # The last training row in (time, row id) order: a later run's holdout holds only rows after it, so a
    # champion is never judged on rows it was trained on (rows can share a timestamp)
    training_last_row_id: Mapped[int | None] = mapped_column(sa.BigInteger)
    library_versions: Mapped[dict[str, Any]]
    # Versions are archived, never deleted, so a version can always name its parent and predecessor.
    parent_version_id: Mapped[str | None] = mapped_column(sa.ForeignKey("model_versions.version_id"))  # production when trained
    previous_production_id: Mapped[str | None] = mapped_column(sa.ForeignKey("model_versions.version_id"))  # what it replaced
    # The features it was trained on (services/schema.py): what later runs and ingestion check rows against
    feature_schema: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # Refit on every row (holdout included) after the decision (promotion.deploy: refit): the artifact
    # is not the one evaluated; `metrics` are the evaluated configuration's.
    refit: Mapped[bool] = mapped_column(default=False)
    # Watched on live outcomes after its promotion (services/probation.py): watching -> passed | rolled_back |
    # superseded (a newer promotion replaced it first)
    probation: Mapped[str | None] = mapped_column(sa.String(16))
    probation_ended_at: Mapped[datetime | None]


class LedgerEntry(Base):
    """The promotion ledger: one row per change of a model's production pointer, never updated or
    deleted (services/ledger.py). Who (a person, or the rule: policy, probation) and why."""

    __tablename__ = "promotion_ledger"
    __table_args__ = (sa.Index("ix_promotion_ledger_model_id", "model", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    model: Mapped[str] = mapped_column(sa.String(100))
    version_id: Mapped[str] = mapped_column(sa.ForeignKey("model_versions.version_id"))  # production from now
    from_version_id: Mapped[str | None] = mapped_column(sa.ForeignKey("model_versions.version_id"))
    action: Mapped[str] = mapped_column(sa.String(24))  # promote | rollback | auto_rollback
    actor: Mapped[str] = mapped_column(sa.String(100))  # a person's name, or policy / probation
    reason: Mapped[str] = mapped_column(sa.Text, default="")
    run_id: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(default=_now)


class RetrainRequest(Base):
    """A retrain asked for by a person or coalesced from events. One pending row per model at most:
    that index is the debounce (a storm of events finds the pending row and joins it)."""

    __tablename__ = "retrain_requests"
    __table_args__ = (
        sa.Index(
            "uq_retrain_requests_one_pending",
            "model",
            unique=True,
            sqlite_where=sa.text("status = 'pending'"),
            postgresql_where=sa.text("status = 'pending'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    model: Mapped[str] = mapped_column(sa.String(100))
    trigger: Mapped[Trigger] = mapped_column(enum_column(Trigger, "trigger"))
    requested_by: Mapped[str] = mapped_column(sa.String(100))
    reason: Mapped[str | None] = mapped_column(sa.Text)
    priority: Mapped[Priority] = mapped_column(enum_column(Priority, "priority"), default=Priority.NORMAL)
    status: Mapped[RequestStatus] = mapped_column(enum_column(RequestStatus, "status"), default=RequestStatus.PENDING)
    event_count: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    not_before: Mapped[datetime] = mapped_column(default=_now)
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    # The run working on it (the latest). No foreign key: runs name their request (training_runs.
    # request_id), and a key each way would make the pair of rows a cycle every insert must order.
    run_id: Mapped[str | None] = mapped_column(sa.String(64))
    lost_runs: Mapped[int] = mapped_column(default=0)  # runs that died on it; capped, so a poison request ends
    error_message: Mapped[str | None] = mapped_column(sa.Text)  # why it failed or was closed
    fine_tune: Mapped[bool] = mapped_column(default=False)  # continue from production (errors trigger)
    drift_report_id: Mapped[int | None] = mapped_column(BigId, sa.ForeignKey("drift_reports.id"))  # the drift that asked
    train_since: Mapped[datetime | None]  # train on rows from here on: when production got worse (accuracy check)


class TrainingRun(Base):
    """One attempt to retrain. The row with status 'running' is the model's run lock (partial index)."""

    __tablename__ = "training_runs"
    __table_args__ = (
        sa.Index(
            "uq_training_runs_one_running",
            "model",
            unique=True,
            sqlite_where=sa.text("status = 'running'"),
            postgresql_where=sa.text("status = 'running'"),
        ),
        sa.Index("ix_training_runs_model_started", "model", "started_at"),
    )

    run_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    model: Mapped[str] = mapped_column(sa.String(100))
    version_id: Mapped[str | None] = mapped_column(sa.ForeignKey("model_versions.version_id"))
    trigger: Mapped[Trigger] = mapped_column(enum_column(Trigger, "trigger"))
    source: Mapped[str] = mapped_column(sa.String(64), default="observations")
    fine_tune: Mapped[bool] = mapped_column(default=False)
    status: Mapped[RunStatus] = mapped_column(enum_column(RunStatus, "status"))
    outcome: Mapped[str | None] = mapped_column(sa.String(32))  # retrained/kept/insufficient_data/...
    started_at: Mapped[datetime] = mapped_column(default=_now)
    completed_at: Mapped[datetime | None]
    lease_expires_at: Mapped[datetime | None]  # renewed by the run's heartbeat; past it, the run is dead
    attempt: Mapped[int] = mapped_column(default=0)  # the Celery retry number of the message that ran it
    duration_seconds: Mapped[float | None]
    dataset_size: Mapped[int | None]
    train_size: Mapped[int | None]
    holdout_size: Mapped[int | None]
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    old_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    promoted_to_production: Mapped[bool] = mapped_column(default=False)
    improvement_percentage: Mapped[float | None]
    promotion_reason: Mapped[str | None] = mapped_column(sa.Text)
    error_message: Mapped[str | None] = mapped_column(sa.Text)
    celery_task_id: Mapped[str | None] = mapped_column(sa.String(64))
    request_id: Mapped[int | None] = mapped_column(sa.ForeignKey("retrain_requests.id"))
    notified_at: Mapped[datetime | None]  # when its decision went to the notifications queue (else re-sent)
    drift_report_id: Mapped[int | None] = mapped_column(BigId, sa.ForeignKey("drift_reports.id"))  # the drift that asked
    train_since: Mapped[datetime | None]  # its rows start here (the request's train_since), else the newest max_rows
    data_report: Mapped[dict[str, Any] | None] = mapped_column(JSONType)  # data checks before fitting
    # The decision record (services/policy.py): each rule with its threshold, value and pass/fail
    decision: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    logs: Mapped[str | None] = mapped_column(sa.Text)  # the run's own log lines (retrainer logs RUN_ID)


class ModelEvaluation(Base):
    """One model scored on one holdout. A run writes one per scored model (candidate, champion)."""

    __tablename__ = "model_evaluations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    version_id: Mapped[str] = mapped_column(sa.ForeignKey("model_versions.version_id"), index=True)
    run_id: Mapped[str] = mapped_column(sa.ForeignKey("training_runs.run_id"), index=True)
    role: Mapped[str] = mapped_column(sa.String(16))  # candidate | champion
    holdout_start: Mapped[datetime]
    holdout_end: Mapped[datetime]
    holdout_rows: Mapped[int]
    holdout_hash: Mapped[str] = mapped_column(sa.String(64))
    metrics: Mapped[dict[str, Any]]
    primary_metric: Mapped[str] = mapped_column(sa.String(32))
    overall_score: Mapped[float | None]  # null when the primary metric is not finite
    champion_score: Mapped[float | None]
    predictions_sample: Mapped[dict[str, Any]]
    # candidate: the paired test against the champion (or the baseline) on these rows (services/significance.py)
    test: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    evaluated_at: Mapped[datetime] = mapped_column(default=_now)


class SystemEvent(Base):
    """The audit log: every trigger, decision, promotion, rollback and notification."""

    __tablename__ = "system_events"
    __table_args__ = (sa.Index("ix_system_events_model_created", "model", "created_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    model: Mapped[str | None] = mapped_column(sa.String(100))
    kind: Mapped[str] = mapped_column(sa.String(48))
    message: Mapped[str] = mapped_column(sa.Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=_now)


class FeatureProfile(Base):
    """A version's reference profile of every feature, built from its training rows when it is
    trained (services/drift.py): what the drift check compares recent inputs with."""

    __tablename__ = "feature_profiles"

    version_id: Mapped[str] = mapped_column(sa.ForeignKey("model_versions.version_id"), primary_key=True)
    rows: Mapped[int]
    profile: Mapped[dict[str, Any]]
    built_at: Mapped[datetime] = mapped_column(default=_now)


class DriftReport(Base):
    """One drift check: recent inputs against the production version's reference profile, per feature."""

    __tablename__ = "drift_reports"
    __table_args__ = (sa.Index("ix_drift_reports_model_checked", "model", "checked_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    model: Mapped[str] = mapped_column(sa.String(100))
    version_id: Mapped[str | None] = mapped_column(sa.ForeignKey("model_versions.version_id"))  # the reference
    checked_at: Mapped[datetime] = mapped_column(default=_now)
    window_start: Mapped[datetime | None]
    window_end: Mapped[datetime | None]
    rows: Mapped[int] = mapped_column(default=0)  # recent inputs compared
    status: Mapped[str] = mapped_column(sa.String(32))  # drift_detected / no_drift / insufficient_data / no_reference
    drifted: Mapped[bool] = mapped_column(default=False)  # dataset drift: share of drifted features >= share
    drifted_share: Mapped[float | None]
    share_threshold: Mapped[float]
    features: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)  # name -> method, statistic, threshold, drifted
    message: Mapped[str] = mapped_column(sa.Text, default="")


class ModelControl(Base):
    """Runtime state of a model that a person sets without a restart: paused (no automatic retrain)."""

    __tablename__ = "model_controls"

    model: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    paused: Mapped[bool] = mapped_column(default=False)
    changed_at: Mapped[datetime] = mapped_column(default=_now)
    changed_by: Mapped[str] = mapped_column(sa.String(100))
    reason: Mapped[str | None] = mapped_column(sa.Text)
