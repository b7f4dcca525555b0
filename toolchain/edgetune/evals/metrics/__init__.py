"""Task metrics for the held-out eval: one module per family, each metric registered by name.

`make_metric(spec)` builds the scorer a `MetricSpec` names (label, exact, contains, regex: `match`; json:
`structured`; number: `number`; text: `text`); `detect_metric` picks one from the references when the spec
says `auto`; `derive_max_new_tokens` sizes the generation budget from the references.
"""

from edgetune.evals.metrics import match, number, structured, text  # noqa: F401  (registers the metrics)
from edgetune.evals.metrics.base import REGISTRY, Metric, Score
from edgetune.evals.metrics.detect import derive_max_new_tokens, detect_metric
from edgetune.evals.metrics.match import normalise_text
from edgetune.metric_spec import AUTO, NAMES, MetricSpec


def make_metric(spec: MetricSpec) -> Metric:
    """The scorer for `spec`. Raises ValueError for `auto` (resolve it first with `resolve_spec`)."""
    if spec.name == AUTO:
        raise ValueError("metric 'auto' must be resolved against the references first (resolve_spec)")
    return REGISTRY[spec.name](spec)


def resolve_spec(spec: MetricSpec, references: list[str]) -> tuple[MetricSpec, str]:
    """`spec` with `auto` replaced: regex when a pattern is given, json when a schema is, else detected from
    `references`. Returns (spec, why) where `why` says how the metric was chosen."""
    if spec.name != AUTO:
        return spec, "set in the config"
    if spec.pattern is not None:
        return spec.resolved("regex"), "a pattern is given"
    if spec.json_schema is not None:
        return spec.resolved("json"), "a JSON schema is given"
    name, why = detect_metric(references)
    return spec.resolved(name), f"auto: {why}"


__all__ = ["AUTO", "NAMES", "REGISTRY", "Metric", "MetricSpec", "Score", "derive_max_new_tokens",
           "detect_metric", "make_metric", "normalise_text", "resolve_spec"]
