"""An exponential-ramp step policy for fledge, written in Python (world fledge:policy/step-policy).

Traffic to the canary doubles each interval (1, 2, 4, 8, ... %) up to the Canary's maxWeight, then the
canary is promoted; failed checks at the threshold roll it back. Config (analysis.policy.config):
{"start": 1, "factor": 2}.

Build: componentize-py -d ../../../../wit/v0.1.0 -w step-policy componentize app -o exponential.wasm --stub-wasi
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log, types


def _config(text: str) -> tuple[int, int]:
    try:
        raw = json.loads(text or "{}")
    except ValueError as e:
        raise Err(types.PolicyError_InvalidConfig(f"config is not JSON: {e}"))
    start, factor = raw.get("start", 1), raw.get("factor", 2)
    if not (isinstance(start, int) and 1 <= start <= 100 and isinstance(factor, int) and factor >= 2):
        raise Err(types.PolicyError_InvalidConfig("start must be 1..100 and factor an integer >= 2"))
    return start, factor


class Step(exports.Step):
    def next(self, rollout: types.Rollout) -> types.StepDecision:
        start, factor = _config(rollout.config)
        analysis = rollout.analysis
        if rollout.phase == types.Phase.PROMOTING:
            return types.StepDecision_SetWeight(0)
        if rollout.phase not in (types.Phase.PROGRESSING, types.Phase.WAITING_PROMOTION):
            return types.StepDecision_Hold(f"nothing to do in phase {rollout.phase.name}")
        if rollout.failed_checks >= max(analysis.threshold, 1):
            return types.StepDecision_Rollback(f"failed checks threshold reached {rollout.failed_checks}")
        max_weight = min(analysis.max_weight or 100, 100)
        if rollout.canary_weight >= max_weight:
            return types.StepDecision_Promote()
        weight = start if rollout.canary_weight == 0 else min(rollout.canary_weight * factor, max_weight)
        log.log(log.Level.INFO, f"exponential ramp: {rollout.canary_weight} -> {weight}")
        return types.StepDecision_SetWeight(weight)
