"""Retrain on feedback: champion against challenger on the same holdout, promote only when
better. Written once; each vertical says how feedback becomes training data
(`Vertical.learn_from`) and how its holdout is kept (`save_holdout`, `extend_holdout`).

1. The champion (the registry's `champion` alias) and its holdout: the one fixed for it
   (a version tag), or, the first time, the test split of its own training config.
2. The feedback in the prediction log (outcomes only) is divided: cases already in the
   holdout stay out of training; with `retrain.holdout_share`, the newest share of the
   feedback the champion never saw joins the holdout (and stays out of training too); the
   rest is the challenger's new training data.
3. The challenger trains from the champion's config plus the user's overrides, through the
   normal pipeline (a tracked run, its own test metrics).
4. Both models are scored on the holdout; `comparison.decide` says whether the challenger
   wins, and why.
5. Only then does the registry change: the challenger is registered (with its holdout and
   the decision as tags) and, when it won and `retrain.promote`, made champion. A retrain
   that fails or is killed before this step leaves the registry as it was; its tracked run
   is marked failed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from verticals.core import comparison, holdout, model_versions, pipeline, registry
from verticals.core.bundle import load_bundle, write_bundle
from verticals.core.contract import Logged, Splits, Vertical
from verticals.core.errors import UserError
from verticals.core.logs import get_logger
from verticals.core.predlog import PredictionLog, parse_since
from verticals.core.run_tracking import metric_key
from verticals.core.runs import write_atomic, write_json
from verticals.core.tracking import Store, model_name

log = get_logger("retrain")
DECISION_TAG = "verticals.retrain.decision"
REASON_TAG = "verticals.retrain.reason"
REPORT = "retrain_report.md"
FIGURES = "retrain.json"


@dataclass
class Feedback:
    """The log's outcomes, divided as step 2 of the module docstring says."""

    train: list[Logged]
    to_holdout: list[Logged]
    in_holdout: int  # already in the champion's holdout (by request id or by case)
    total: int
    since: datetime | None
    overlap: int = 0  # left out of training: they share a case with the new holdout cases
    held_keys: set[str] = field(default_factory=set)  # the cases no challenger may train on

    @property
    def until(self) -> str | None:
        """The newest prediction the challenger learns from (UTC): feedback after it is
        fresh to the challenger, should it become champion."""
        times = [e.created for e in self.train if e.created is not None]
        return max(times).isoformat() if times else None


@dataclass
class Result:
    vertical: str
    run_dir: Path
    version: int
    promoted: bool
    decision: comparison.Comparison
    report: Path
    champion_version: int


def retrain(cfg: DictConfig, overrides: dict[str, Any], plog: PredictionLog) -> Result:
    """Steps 1-5 of the module docstring; `overrides`: the training settings the user
    changed (dotted keys). Raises `UserError`, the registry untouched, when there is no
    champion or too little feedback."""
    vertical = registry.get(cfg.vertical)
    store = Store.of(cfg)
    if store is None:
        raise UserError("tracking is off (tracking=none); retrain needs the registry")
    champion = model_versions.champion(store, vertical.name)
    if champion is None:
        raise UserError(
            f"{model_name(vertical.name)} has no champion to challenge",
            hint=f"`verticals package {vertical.name}` registers the first version as champion",
        )
    inputs = str(cfg.log.get("inputs", "full"))
    if inputs != "full":
        raise UserError(
            f"log.inputs={inputs}: the prediction log keeps no inputs to learn from",
            hint="serve with log.inputs=full (the default) to retrain on feedback",
        )
    bundle = load_bundle(model_versions.check_bundle(store, champion, "retrained against"))
    rules = comparison.Rules.of(cfg.retrain, vertical.headline_metric, vertical.headline_goal,
                                seed=int(cfg.seed))  # fmt: skip
    fixed = champion_holdout(cfg, vertical, champion, bundle)
    feedback = divide(cfg, plog, vertical, fixed, fresh_after(bundle.path))
    print(
        f"{vertical.name}: champion is version {champion.version} ({bundle.model_version}); "
        f"{feedback.total} outcomes in the log, {len(feedback.train)} to learn from, "
        f"{len(feedback.to_holdout)} to the holdout, {feedback.in_holdout} in it already, "
        f"{feedback.overlap} left out for sharing a case with the new holdout cases"
    )
    if len(feedback.train) < int(cfg.retrain.min_feedback):
        raise UserError(
            f"{len(feedback.train)} outcomes to learn from{_window(feedback.since)}; "
            f"retrain.min_feedback={cfg.retrain.min_feedback}",
            hint="wait for more feedback, or lower retrain.min_feedback",
        )
    challenger_cfg = challenger_config(cfg, bundle.config, overrides)
    trained = pipeline.train(challenger_cfg, prepare=_learning(vertical, challenger_cfg, feedback))
    try:
        return _judge(cfg, store, vertical, champion, bundle, fixed, feedback, trained, rules)
    except BaseException as exc:
        _mark_failed(store, trained.run_dir, exc)
        raise


def _judge(
    cfg: DictConfig,
    store: Store,
    vertical: Vertical,
    champion: model_versions.Version,
    bundle: Any,
    fixed: holdout.Holdout,
    feedback: Feedback,
    trained: pipeline.TrainResult,
    rules: comparison.Rules,
) -> Result:
    scored_on = fixed
    if feedback.to_holdout:
        data = vertical.extend_holdout(bundle.model, fixed.data, feedback.to_holdout)
        ids = fixed.feedback_ids | {e.request_id for e in feedback.to_holdout}
        base = {**fixed.meta.get("base", {}), "extended_from": fixed.folder.name}
        scored_on = holdout.write(vertical, data, holdout.root(cfg, vertical.name), base, ids)
    print(f"{vertical.name}: scoring champion and challenger on holdout {scored_on.describe()}")
    champion_metrics = vertical.evaluate(bundle.model, scored_on.data, None)
    challenger_metrics = vertical.evaluate(trained.model, scored_on.data, None)
    interval = None
    a = vertical.score_cases(bundle.model, scored_on.data)
    b = vertical.score_cases(trained.model, scored_on.data)
    if a is not None and b is not None:
        interval = comparison.bootstrap(a, b, rules)
    decision = comparison.decide(champion_metrics, challenger_metrics, rules, interval)
    promote = decision.promote and bool(cfg.retrain.promote)
    verdict = "promoted" if promote else ("won, not promoted" if decision.promote else "refused")

    bundles = Path(cfg.paths.bundles_dir)
    folder = bundles / vertical.name / trained.run_dir.name
    name = model_versions.free_bundle_name(store, vertical.name, folder)
    sign = cfg.get("sign") or {}
    packaged = write_bundle(trained.run_dir, bundles, vertical, name=name, sign_key=sign.get("key"))
    tags = {
        holdout.TAG: str(scored_on.folder),
        holdout.DIGEST_TAG: scored_on.digest,
        DECISION_TAG: verdict,
        REASON_TAG: decision.reason[:1000],
    }
    _record(store, trained.run_dir, decision, rules, verdict)
    number = None
    try:  # the registry changes here only, and is put back if any step fails
        number, _ = model_versions.register(store, packaged, vertical.name, tags)
        report = _write_report(
            trained.run_dir, vertical, champion.version, number, verdict, decision, rules,
            scored_on, feedback, cfg,
        )  # fmt: skip
        _attach(store, trained.run_dir, number, report)
        if promote:
            model_versions.promote(store, vertical.name, number,
                                   reason=f"retrain: {decision.reason}")  # fmt: skip
    except BaseException:
        if number is not None:
            model_versions.forget(store, vertical.name, number, champion.version)
        raise
    return Result(vertical.name, trained.run_dir, number, promote, decision, report,
                  champion.version)  # fmt: skip


def champion_holdout(
    cfg: DictConfig, vertical: Vertical, champion: model_versions.Version, bundle: Any
) -> holdout.Holdout:
    """The holdout fixed for the champion (a tag of its version); the first time, the test
    split of the champion's own training config, saved where its version will find it."""
    named = champion.tags.get(holdout.TAG)
    if named:
        return holdout.read(vertical, Path(named), champion.tags.get(holdout.DIGEST_TAG))
    where = holdout.root(cfg, vertical.name)
    name = f"version-{champion.version}-{champion.tags.get(model_versions.DIGEST_TAG, '')[:12]}"
    if (where / name / holdout.META).is_file():
        return holdout.read(vertical, where / name)
    saved = _data_config(cfg, bundle.config)
    if vertical.reads_on_cluster(saved):
        raise UserError(
            f"{vertical.name}: version {champion.version} was trained on a table that Ray tasks "
            "read in pieces (cluster= with a Parquet table); a holdout keeps its test split in "
            "one process, so retraining such a version is not supported yet"
        )
    print(f"{vertical.name}: fixing the holdout of version {champion.version}: the test "
          f"split of its training config ({saved.data.get('source', 'data')})")  # fmt: skip
    splits: Splits = vertical.load_data(saved)
    base = {"from": f"version {champion.version} ({bundle.model_version}), its test split"}
    return holdout.write(vertical, splits.test, where, base, name=name)


def fix_holdout(cfg: DictConfig, store: Store, number: int) -> Path | None:
    """When a version becomes champion: fix its holdout now (the test split of its training
    config, unless a retrain already gave it one) and name it in the version's tags. Best
    effort: a vertical without holdouts, or data no longer there, leaves it to the first
    retrain, which says so."""
    vertical = registry.get(cfg.vertical)
    version = model_versions.get_version(store, vertical.name, number)
    if version.tags.get(holdout.TAG):
        return None
    try:
        bundle = load_bundle(model_versions.check_bundle(store, version, "served", files=False))
        fixed = champion_holdout(cfg, vertical, version, bundle)
    except (UserError, NotImplementedError) as exc:
        log.warning("the holdout of version %s is not fixed yet: %s", number, exc)
        return None
    client = store.client()
    client.set_model_version_tag(model_name(vertical.name), str(number), holdout.TAG,
                                 str(fixed.folder))  # fmt: skip
    client.set_model_version_tag(model_name(vertical.name), str(number), holdout.DIGEST_TAG,
                                 fixed.digest)  # fmt: skip
    return fixed.folder


#: Settings a challenger takes from the retrain command, not from the champion's run.
RUNTIME = ("paths", "trainer", "tracking")


def challenger_config(cfg: DictConfig, saved: DictConfig, overrides: dict[str, Any]) -> DictConfig:
    """The champion's training config, this machine's paths, device and tracking, and the
    user's overrides on top (`model.num_leaves=63`)."""
    merged = OmegaConf.merge(saved, {k: cfg[k] for k in RUNTIME if k in cfg})
    assert isinstance(merged, DictConfig)
    for key, value in overrides.items():
        OmegaConf.update(merged, key, value, force_add=True)
    return merged


def _data_config(cfg: DictConfig, saved: DictConfig) -> DictConfig:
    """The champion's saved config with this machine's paths (caches, demo data)."""
    merged = OmegaConf.merge(saved, {k: cfg[k] for k in ("paths", "trainer") if k in cfg})
    assert isinstance(merged, DictConfig)
    return merged


def fresh_after(bundle_dir: Path) -> datetime | None:
    """The newest prediction the champion learnt from: feedback after it is fresh to it
    (None: it learnt from none, so all feedback is)."""
    run = Path(bundle_dir) / "run.json"
    info = json.loads(run.read_text()) if run.is_file() else {}
    until = ((info.get("data") or {}).get("feedback") or {}).get("until")
    return datetime.fromisoformat(until) if until else None


def divide(
    cfg: DictConfig,
    plog: PredictionLog,
    vertical: Vertical,
    fixed: holdout.Holdout,
    newer_than: datetime | None,
) -> Feedback:
    """Step 2: outcomes already in the holdout (the same request, or the same case: an
    applicant of the test split sent to the server) stay out; the newest share of the
    feedback the champion never saw joins the holdout, and whatever shares a case with it
    (the same image sent twice, overlapping sensor windows) stays out of training too."""
    since = parse_since(cfg.retrain.since, "retrain.since")
    entries = plog.entries(vertical.name, since, outcomes_only=True)
    held = vertical.case_keys(fixed.data)
    keys = {e.request_id: vertical.entry_keys(e) for e in entries}
    known = fixed.feedback_ids
    kept = [e for e in entries if e.request_id not in known and not keys[e.request_id] & held]
    fresh = [e for e in kept if newer_than is None or (e.created and e.created > newer_than)]
    count = math.floor(len(fresh) * float(cfg.retrain.holdout_share))
    newest = sorted(fresh, key=lambda e: (e.created or datetime.min, e.request_id))
    to_holdout = newest[len(newest) - count :] if count else []
    added: set[str] = set().union(*(keys[e.request_id] for e in to_holdout))
    ids = {e.request_id for e in to_holdout}
    rest = [e for e in kept if e.request_id not in ids]
    train = [e for e in rest if not keys[e.request_id] & added]
    return Feedback(train, to_holdout, len(entries) - len(kept), len(entries), since,
                    overlap=len(rest) - len(train), held_keys=held | added)  # fmt: skip


def _no_leak(vertical: Vertical, splits: Splits, held: set[str]) -> None:
    """Refuse a challenger that would train on the holdout (an override of `seed` or
    `data.*` drew another split): a few shared cases are tolerated, since real tables hold
    duplicate rows."""
    if not held:
        return
    trained = vertical.case_keys(splits.train)
    if splits.val is not None:
        trained |= vertical.case_keys(splits.val)
    shared = len(trained & held)
    if shared > 0.05 * len(held):
        raise UserError(
            f"the challenger's training data holds {shared} of the holdout's {len(held)} "
            "cases: an override of seed or data.* drew another split",
            hint="retrain with the champion's data settings; a new data source needs a new "
            "champion (`verticals train`, `package`, `promote`)",
        )


def _learning(vertical: Vertical, cfg: DictConfig, feedback: Feedback) -> Any:
    def prepare(splits: Splits) -> Splits:
        learnt = vertical.learn_from(cfg, splits, feedback.train)
        _no_leak(vertical, learnt, feedback.held_keys)
        said = learnt.info.get("feedback")
        learnt.info["feedback"] = {
            **(said if isinstance(said, dict) else {"cases": said}),
            "requests": len(feedback.train),
            "until": feedback.until,
        }
        return learnt

    return prepare


def _window(since: datetime | None) -> str:
    return f" since {since.isoformat(timespec='minutes')} UTC" if since else ""


def _record(
    store: Store,
    run_dir: Path,
    decision: comparison.Comparison,
    rules: comparison.Rules,
    verdict: str,
) -> None:
    """Both metric sets, the rules and the decision on the challenger's tracked run."""
    run_id = _run_id(run_dir)
    if run_id is None:
        return
    client = store.client()
    for side, metrics in (("champion", decision.champion), ("challenger", decision.challenger)):
        for name, value in metrics.items():
            if isinstance(value, int | float) and math.isfinite(value):
                client.log_metric(run_id, f"holdout_{side}.{metric_key(name)}", float(value))
    if math.isfinite(decision.gain):
        client.log_metric(run_id, "holdout_gain", decision.gain)
    if decision.interval is not None:
        client.log_metric(run_id, "holdout_gain_low", decision.interval.low)
        client.log_metric(run_id, "holdout_gain_high", decision.interval.high)
    client.log_param(run_id, "retrain.margin", rules.margin)
    client.log_param(run_id, "retrain.metric", rules.metric)
    client.set_tag(run_id, DECISION_TAG, verdict)
    client.set_tag(run_id, REASON_TAG, decision.reason[:5000])


def _attach(store: Store, run_dir: Path, number: int, report: Path) -> None:
    """The version number and the report on the challenger's run."""
    run_id = _run_id(run_dir)
    if run_id is not None:
        client = store.client()
        client.set_tag(run_id, "verticals.retrain.version", str(number))
        client.log_artifact(run_id, str(report))


def _run_id(run_dir: Path) -> str | None:
    path = run_dir / "run.json"
    info = json.loads(path.read_text()) if path.is_file() else {}
    return (info.get("tracking") or {}).get("run_id")


def _mark_failed(store: Store, run_dir: Path, exc: BaseException) -> None:
    """The challenger's run says the retrain failed after it trained (nothing registered)."""
    run_id = _run_id(run_dir)
    if run_id is None:
        return
    try:
        client = store.client()
        client.set_tag(run_id, DECISION_TAG, "failed")
        client.set_tag(run_id, REASON_TAG, f"{type(exc).__name__}: {exc}"[:5000])
        client.set_terminated(run_id, "FAILED")
    except Exception:  # noqa: BLE001 - the original error is the one to show
        log.warning("could not mark run %s failed", run_id, exc_info=True)


def _write_report(
    run_dir: Path,
    vertical: Vertical,
    champion: int,
    challenger: int,
    verdict: str,
    decision: comparison.Comparison,
    rules: comparison.Rules,
    scored_on: holdout.Holdout,
    feedback: Feedback,
    cfg: DictConfig,
) -> Path:
    """`retrain_report.md` (and `retrain.json`) beside the challenger's run."""
    names = [k for k in decision.champion if k in decision.challenger]
    rows = "\n".join(
        f"| {'**' + k + '**' if k == rules.metric else k} | {_num(decision.champion[k])} | "
        f"{_num(decision.challenger[k])} |"
        for k in names
    )
    guards = (
        "\n".join(
            f"| {g['metric']} | {_num(g['champion'])} | {_num(g['challenger'])} | "
            f"{_num(g['worse_by'])} | {g['tolerance']:g} | {'broken' if g['broken'] else 'held'} |"
            for g in decision.guards
        )
        or "| (none) | | | | | |"
    )
    interval = decision.interval
    ci = (
        f"{interval.confidence:.0%} bootstrap interval of the gain: [{interval.low:+.4f}, "
        f"{interval.high:+.4f}] ({interval.resamples} paired resamples of {interval.cases} cases)"
        if interval is not None
        else "no bootstrap interval (the vertical gives no per-case scores, or bootstrap=0)"
    )
    added = (
        f"- {len(feedback.to_holdout)} cases of fresh feedback were added to the holdout "
        f"(retrain.holdout_share={cfg.retrain.holdout_share}); the challenger did not train "
        "on them, and neither did the champion\n"
        if feedback.to_holdout
        else "- no feedback was added to the holdout this time\n"
    )
    text = (
        f"# Retrain of {vertical.title or vertical.name}: {verdict}\n\n"
        f"**Decision:** {verdict}. {decision.reason}.\n\n"
        f"- champion: version {champion}; challenger: version {challenger} "
        f"(run `{run_dir.name}`)\n"
        f"- primary metric: {rules.metric} ({'higher' if rules.goal == 'max' else 'lower'} "
        f"is better), margin {rules.margin:g}; gain {_num(decision.gain)}\n"
        f"- {ci}\n"
        f"- promote: {'yes' if cfg.retrain.promote else 'no (retrain.promote=false)'}\n\n"
        "## Holdout\n\n"
        f"- {scored_on.describe()}, `{scored_on.folder}`\n"
        f"{added}"
        f"- {len(scored_on.feedback_ids)} feedback cases in it in all; no challenger trains "
        "on them\n\n"
        "## Feedback learnt from\n\n"
        f"- {len(feedback.train)} of {feedback.total} outcomes in the log"
        f"{_window(feedback.since)}; {feedback.in_holdout} were in the holdout already, "
        f"{feedback.overlap} shared a case with the new holdout cases (left out)\n\n"
        "## Metrics on the holdout\n\n"
        f"| metric | champion | challenger |\n| --- | --- | --- |\n{rows}\n\n"
        "## Guards\n\n"
        "| metric | champion | challenger | worse by | tolerance | |\n"
        f"| --- | --- | --- | --- | --- | --- |\n{guards}\n"
    )
    path = run_dir / REPORT
    write_atomic(path, text)
    write_json(run_dir / FIGURES, {
        "verdict": verdict, "champion_version": champion, "challenger_version": challenger,
        "holdout": str(scored_on.folder), "feedback": {
            "learnt": len(feedback.train), "to_holdout": len(feedback.to_holdout),
            "in_holdout": feedback.in_holdout, "overlap": feedback.overlap,
            "total": feedback.total},
        **decision.to_dict(),
    })  # fmt: skip
    return path


def _num(value: Any) -> str:
    if isinstance(value, int | float) and math.isfinite(value):
        return f"{value:.4f}"
    return "n/a"
