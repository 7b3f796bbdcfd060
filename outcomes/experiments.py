"""A/B experiments: created, stopped and promoted here, their plans handed to serving (core/experiments.py),
their results read from the impressions and attributions of their answers.

Results per variant: shoppers exposed, impressions, clicks, CTR with its 95% (Wilson) interval,
add-to-carts, purchases, conversion with its interval, revenue, and the relative CTR lift against the
control (the first variant). The verdict is a mixture sequential probability ratio test (mSPRT, Johari et
al., "Always valid inference", 2017) on the difference of CTRs, normal approximation: its p-value is valid
at every look, and the experiment keeps the least one seen, so looking every day does not inflate false
positives."""

from __future__ import annotations

import math
import time
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from core import answer_cache, experiments
from core.errors import ApiError, NotFound
from events.models import EventType
from outcomes.models import Experiment, ExperimentStatus
from tenants.authentication import CONTROL_CHARACTERS
from tenants.models import Store
from tenants.services import audit_record

# surfaces whose answers are for one shopper, whom a variant is assigned to: the shopper in the URL
# (for_user, rank) or, on the product surfaces and trending, in the `user_id` query parameter
SURFACES = ("for_user", "related", "complementary", "complete_the_look", "trending", "rank")
STRATEGIES = ("model", "popularity")
CONFIG_KEYS = {"strategy", "model_version", "ranker", "diversity", "max_per_category"}
RANKER_SURFACES = ("for_user", "rank", "related", "complementary")  # the surfaces the ranking stage orders
MAX_VARIANTS = 10
ALPHA = 0.05
# the mixing distribution of the CTR difference under the alternative (mSPRT): centred on differences of
# about a fifth of the pooled CTR (a 5% CTR: a point), the size of lift the test is quickest to find
TAU_RELATIVE = 0.2
Z95 = 1.959964


def _problem(message: str, code: str = "invalid_experiment") -> ApiError:
    return ApiError(code, message)


def _clean_config(name: str, config: Any, *, store: Store, surface: str) -> dict[str, Any]:
    """{"strategy": "model" | "popularity", "model_version": a version of the store's model (active or
    not), "ranker": false (the first stage alone, where the version has a ranking stage), "diversity":
    0..1 (MMR), "max_per_category": 1..100}"""
    if not isinstance(config, dict) or set(config) - CONFIG_KEYS:
        raise _problem(f"variant {name!r}: config may hold {', '.join(sorted(CONFIG_KEYS))}")
    strategy = config.get("strategy", "model")
    if strategy not in STRATEGIES:
        raise _problem(f"variant {name!r}: strategy must be one of {', '.join(STRATEGIES)}")
    if surface == "trending" and strategy == "popularity":
        raise _problem(
            f"variant {name!r}: trending is popularity already; test a model_version, diversity or "
            "max_per_category on it"
        )
    clean: dict[str, Any] = {"strategy": strategy}
    version = config.get("model_version")
    if isinstance(version, float) and version.is_integer():
        version = int(version)
    if version is not None:
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= 2**31 - 1:
            raise _problem(f"variant {name!r}: model_version must be a version number")
        if strategy == "popularity":
            raise _problem(f"variant {name!r}: a popularity control serves no model_version")
        problem = experiments.version_problem(store.id, version)
        if problem is not None:
            raise _problem(f"variant {name!r}: {problem}", "unknown_model_version")
        clean["model_version"] = version
    if "ranker" in config:
        if not isinstance(config["ranker"], bool):
            raise _problem(f"variant {name!r}: ranker must be true or false")
        if surface not in RANKER_SURFACES:
            surfaces = ", ".join(RANKER_SURFACES[:-1]) + " and " + RANKER_SURFACES[-1]
            raise _problem(f"variant {name!r}: the ranking stage orders {surfaces} only")
        if strategy == "popularity":
            raise _problem(f"variant {name!r}: a popularity control has no ranking stage")
        clean["ranker"] = config["ranker"]
    diversity = config.get("diversity")
    if diversity is not None:
        if isinstance(diversity, bool) or not isinstance(diversity, int | float) or not 0 <= diversity <= 1:
            raise _problem(f"variant {name!r}: diversity must be a number from 0 to 1")
        clean["diversity"] = float(diversity)
    per_category = config.get("max_per_category")
    if isinstance(per_category, float) and per_category.is_integer():
        per_category = int(per_category)  # (JSON's 2.0 is an integer)
    if per_category is not None:
        if (
            isinstance(per_category, bool)
            or not isinstance(per_category, int)
            or not 1 <= per_category <= 100
        ):
            raise _problem(f"variant {name!r}: max_per_category must be an integer from 1 to 100")
        clean["max_per_category"] = per_category
    return clean


def _clean_variants(raw: Any, *, store: Store, surface: str) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not 2 <= len(raw) <= MAX_VARIANTS:
        raise _problem(f"variants must be a list of 2 to {MAX_VARIANTS} variants; the first is the control")
    variants: list[dict[str, Any]] = []
    names: set[str] = set()
    for index, variant in enumerate(raw):
        if not isinstance(variant, dict) or set(variant) - {"name", "traffic", "config"}:
            raise _problem(f'variant {index} must be {{"name", "traffic", "config"}}')
        name, traffic, config = variant.get("name"), variant.get("traffic"), variant.get("config", {})
        if not isinstance(name, str) or not 0 < len(name) <= 64 or CONTROL_CHARACTERS.search(name):
            raise _problem(f"variant {index}: name must be a string of 1 to 64 characters")
        if name in names:
            raise _problem(f"variant names must differ; {name!r} is there twice")
        if isinstance(traffic, bool) or not isinstance(traffic, int | float) or not 0 < traffic <= 1:
            raise _problem(f"variant {name!r}: traffic must be a share above 0 and at most 1")
        names.add(name)
        clean = _clean_config(name, config, store=store, surface=surface)
        variants.append({"name": name, "traffic": float(traffic), "config": clean})
    if abs(sum(float(v["traffic"]) for v in variants) - 1) > 1e-6:
        raise _problem("the variants' traffic shares must add up to 1")
    return variants


def experiment_create(*, store: Store, body: Any) -> Experiment:
    if not isinstance(body, dict):
        raise _problem('the body must be {"name", "surface", "variants"}')
    unknown = set(body) - {"name", "surface", "variants"}
    if unknown:
        raise ApiError("unknown_field", f"unknown fields: {sorted(unknown)}", details=sorted(unknown))
    name, surface = body.get("name"), body.get("surface")
    if not isinstance(name, str) or not 0 < len(name) <= 100 or CONTROL_CHARACTERS.search(name):
        raise _problem("name must be a string of 1 to 100 characters")
    if surface not in SURFACES:
        raise _problem(f"experiments run on these surfaces: {', '.join(SURFACES)}", "unsupported_surface")
    variants = _clean_variants(body.get("variants"), store=store, surface=surface)
    try:
        with transaction.atomic():
            experiment = Experiment.objects.create(store=store, name=name, surface=surface, variants=variants)
    except IntegrityError as error:
        running = Experiment.objects.filter(
            store=store, surface=surface, status=ExperimentStatus.RUNNING
        ).first()
        raise ApiError(
            "experiment_running",
            f"an experiment runs on {surface} already; stop it first",
            status_code=409,
            details={"experiment_id": running.pk if running else None},
        ) from error
    audit_record(store=store, action="experiment.create", target=str(experiment.pk), changes={"name": name})
    answer_cache.store_changed(store)  # cached answers of the surface are of no variant
    return experiment


def experiment_get(*, store: Store, experiment_id: int) -> Experiment:
    experiment = Experiment.objects.filter(store=store, pk=experiment_id).first()
    if experiment is None:
        raise NotFound(f"no experiment {experiment_id} in this store")
    return experiment


def experiment_stop(*, store: Store, experiment: Experiment) -> Experiment:
    if experiment.status != ExperimentStatus.RUNNING:
        raise ApiError("experiment_not_running", f"the experiment is {experiment.status}", status_code=409)
    experiment.status, experiment.stopped_at = ExperimentStatus.STOPPED, timezone.now()
    experiment.save(update_fields=["status", "stopped_at"])
    audit_record(store=store, action="experiment.stop", target=str(experiment.pk))
    answer_cache.store_changed(store)
    return experiment


def experiment_promote(*, store: Store, experiment: Experiment, variant: Any) -> Experiment:
    """Make a variant the surface's default from now on (the experiment ends, if it still ran)."""
    names = [v["name"] for v in experiment.variants]
    if variant not in names:
        raise _problem(f"variant must be one of {', '.join(names)}")
    if experiment.status == ExperimentStatus.PROMOTED:
        raise ApiError(
            "experiment_promoted", f"variant {experiment.winner!r} was promoted already", status_code=409
        )
    experiment.status, experiment.winner = ExperimentStatus.PROMOTED, variant
    experiment.stopped_at = experiment.stopped_at or timezone.now()
    experiment.save(update_fields=["status", "winner", "stopped_at"])
    audit_record(
        store=store, action="experiment.promote", target=str(experiment.pk), changes={"variant": variant}
    )
    answer_cache.store_changed(store)
    return experiment


# --- serving's plan (core/experiments.py) --------------------------------------------------------------

_plans: dict[int, tuple[bytes | None, float, dict[str, experiments.Plan]]] = {}
PLAN_SECONDS = 5.0  # without a cache generation to check against, plans are looked up again after this


def plan_for(store_id: int, surface: str, generation: bytes | None) -> experiments.Plan | None:
    """The running experiment of the surface, else the variant promoted last. A store's plans of every
    surface are read in one query and remembered per process while the store's cache generation holds
    (creating, stopping and promoting move it)."""
    if surface not in SURFACES:
        return None
    now = time.monotonic()
    cached = _plans.get(store_id)
    if cached is not None and (
        cached[0] == generation
        if generation is not None
        else cached[0] is None and now - cached[1] < PLAN_SECONDS
    ):
        return cached[2].get(surface)
    plans: dict[str, experiments.Plan] = {}
    # each surface's running experiment, else its latest promoted one
    rows = (
        Experiment.objects.filter(store_id=store_id)
        .exclude(status=ExperimentStatus.STOPPED)
        .order_by("surface", "-status", "-stopped_at")  # ("running" sorts after "promoted")
        .values_list("pk", "surface", "status", "variants", "winner")
    )
    for pk, row_surface, status, variants, winner in rows:
        if row_surface in plans:
            continue
        if status == ExperimentStatus.RUNNING:
            plans[row_surface] = experiments.Plan(
                pk, row_surface, tuple(_variant(v) for v in variants), running=True
            )
        else:
            chosen = next(v for v in variants if v["name"] == winner)
            plans[row_surface] = experiments.Plan(
                pk, row_surface, (_variant({**chosen, "traffic": 1.0}),), running=False
            )
    if len(_plans) > 100_000:
        _plans.clear()
    _plans[store_id] = (generation, now, plans)
    return plans.get(surface)


def _variant(raw: dict[str, Any]) -> experiments.Variant:
    return experiments.Variant(raw["name"], float(raw["traffic"]), dict(raw.get("config") or {}))


# --- results --------------------------------------------------------------------------------------------


def wilson(successes: int, trials: int) -> list[float] | None:
    """The 95% Wilson score interval of a proportion; None without trials."""
    if trials <= 0:
        return None
    share = successes / trials
    denominator = 1 + Z95**2 / trials
    centre = (share + Z95**2 / (2 * trials)) / denominator
    half = Z95 * math.sqrt(share * (1 - share) / trials + Z95**2 / (4 * trials**2)) / denominator
    return [round(max(0.0, centre - half), 6), round(min(1.0, centre + half), 6)]


def msprt_p_value(clicks: int, impressions: int, control_clicks: int, control_impressions: int) -> float:
    """The always-valid p-value of "the CTRs differ" at this look: 1 / the mixture likelihood ratio."""
    if impressions == 0 or control_impressions == 0:
        return 1.0
    rate, control = clicks / impressions, control_clicks / control_impressions
    variance = rate * (1 - rate) / impressions + control * (1 - control) / control_impressions
    if variance <= 0:
        return 1.0
    difference = rate - control
    pooled = (clicks + control_clicks) / (impressions + control_impressions)
    tau_squared = max((TAU_RELATIVE * pooled) ** 2, 1e-8)
    log_ratio = 0.5 * math.log(variance / (variance + tau_squared)) + difference**2 * tau_squared / (
        2 * variance * (variance + tau_squared)
    )
    return min(1.0, math.exp(-log_ratio))


def _counts(store: Store, experiment: Experiment) -> dict[str, dict[str, Any]]:
    counts: dict[str, dict[str, Any]] = {
        v["name"]: {
            "users": 0,
            "impressions": 0,
            "shown": 0,
            "clicks": 0,
            "add_to_carts": 0,
            "purchases": 0,
            "revenue": Decimal(0),
        }
        for v in experiment.variants
    }
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT variant, count(DISTINCT user_id), count(*), count(shown_at) FROM outcomes_impression "
            "WHERE store_id = %s AND experiment_id = %s GROUP BY variant",
            [store.id, experiment.pk],
        )
        for variant, users, impressions, shown in cursor.fetchall():
            if variant in counts:
                counts[variant].update(users=users, impressions=impressions, shown=shown)
        cursor.execute(
            "SELECT i.variant, count(*) FILTER (WHERE a.type = %(click)s), "
            "count(*) FILTER (WHERE a.type = %(add_to_cart)s), "
            "count(*) FILTER (WHERE a.type = %(purchase)s), "
            "coalesce(sum(a.revenue) FILTER (WHERE a.type = %(purchase)s), 0) "
            "FROM outcomes_attribution AS a JOIN outcomes_impression AS i "
            "ON i.recommendation_id = a.recommendation_id AND i.store_id = a.store_id "
            "WHERE a.store_id = %(store)s AND a.kind = 'direct' AND i.experiment_id = %(experiment)s "
            "GROUP BY i.variant",
            {
                "store": store.id,
                "experiment": experiment.pk,
                "click": int(EventType.CLICK),
                "add_to_cart": int(EventType.ADD_TO_CART),
                "purchase": int(EventType.PURCHASE),
            },
        )
        for variant, clicks, carts, purchases, revenue in cursor.fetchall():
            if variant in counts:
                counts[variant].update(
                    clicks=clicks, add_to_carts=carts, purchases=purchases, revenue=revenue
                )
    return counts


def experiment_results(*, store: Store, experiment: Experiment) -> dict[str, Any]:
    """Each variant's counts, rates with 95% intervals, lift and always-valid p-value; and the verdict. The
    least p-value of every look is kept on the experiment while it runs."""
    counts = _counts(store, experiment)
    control_name = experiment.variants[0]["name"]
    control = counts[control_name]
    control_ctr = control["clicks"] / control["impressions"] if control["impressions"] else None
    kept = dict(experiment.p_values or {})
    results = []
    for name, figures in counts.items():
        impressions = figures["impressions"]
        ctr = figures["clicks"] / impressions if impressions else None
        row: dict[str, Any] = {
            "variant": name,
            "control": name == control_name,
            **{k: figures[k] for k in ("users", "impressions", "shown", "clicks")},
            "ctr": ctr,
            "ctr_interval": wilson(figures["clicks"], impressions),
            "add_to_carts": figures["add_to_carts"],
            "purchases": figures["purchases"],
            "conversion_rate": figures["purchases"] / impressions if impressions else None,
            "conversion_interval": wilson(figures["purchases"], impressions),
            "revenue": float(round(Decimal(figures["revenue"]), 2)),
            "lift_vs_control": None,
            "p_value": None,
            "significant": False,
        }
        if name != control_name:
            if ctr is not None and control_ctr:
                row["lift_vs_control"] = ctr / control_ctr - 1
            p_value = msprt_p_value(figures["clicks"], impressions, control["clicks"], control["impressions"])
            p_value = kept[name] = min(p_value, kept.get(name, 1.0))
            row["p_value"] = round(p_value, 6)
            row["significant"] = p_value <= ALPHA
        results.append(row)
    if kept != (experiment.p_values or {}) and experiment.status == ExperimentStatus.RUNNING:
        Experiment.objects.filter(pk=experiment.pk).update(p_values=kept)
        experiment.p_values = kept
    return {"results": results, "verdict": _verdict(results)}


def _verdict(results: list[dict[str, Any]]) -> dict[str, Any]:
    control = results[0]["ctr"] or 0
    better = [r for r in results if r["significant"] and (r["ctr"] or 0) > control]
    worse = [r for r in results if r["significant"] and (r["ctr"] or 0) < control]
    if better:
        best = max(better, key=lambda r: r["ctr"] or 0)
        message = f"{best['variant']} has a higher CTR than the control (always-valid p <= {ALPHA})"
        return {"decision": "variant_wins", "variant": best["variant"], "message": message}
    if worse and len(worse) == len(results) - 1:
        message = f"every variant has a lower CTR than the control (always-valid p <= {ALPHA})"
        return {"decision": "control_wins", "variant": results[0]["variant"], "message": message}
    message = "no difference in CTR is significant yet; keep it running (looking again costs nothing)"
    return {"decision": "undecided", "variant": None, "message": message}


def experiment_dict(experiment: Experiment) -> dict[str, Any]:
    return {
        "id": experiment.pk,
        "name": experiment.name,
        "surface": experiment.surface,
        "status": experiment.status,
        "variants": experiment.variants,
        "winner": experiment.winner or None,
        "started_at": experiment.started_at,
        "stopped_at": experiment.stopped_at,
    }
