"""A fledge step policy in Python (world fledge:policy/step-policy, contract 0.2): traffic moves to the
next weight only after two analyses in a row passed at the current one. The count lives in the policy's
own `state`, which fledge keeps in the Canary's status between analysis intervals. Analysis and gates are
fledge's built-in default's. Config (analysis.policy.config): {"passes": 2}.

Build: componentize-py -d wit -w step-policy componentize app --stub-wasi -o two-passes.wasm
Test:  fledge policy test two-passes.wasm scenario.yaml
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log, types


def _passes_required(config: str) -> int:
    try:
        raw = json.loads(config or "{}")
    except ValueError as e:
        raise Err(types.PolicyError_InvalidConfig(f"config is not JSON: {e}"))
    passes = raw.get("passes", 2)
    if not (isinstance(passes, int) and 1 <= passes <= 10):
        raise Err(types.PolicyError_InvalidConfig("passes must be 1..=10"))
    return passes


def _answer(decision, memory=None) -> types.StepAnswer:
    # None keeps the state fledge has; a JSON text replaces it.
    return types.StepAnswer(decision=decision, state=None if memory is None else json.dumps(memory))


class Step(exports.Step):
    def next(self, rollout: types.Rollout) -> types.StepAnswer:
        required = _passes_required(rollout.config)
        analysis = rollout.analysis
        if analysis.iterations:
            raise Err(types.PolicyError_Unsupported("blue/green and A/B (analysis.iterations) are not stepped by weight"))
        if rollout.phase == types.Phase.PROMOTING:
            return _answer(types.StepDecision_Promote())
        if rollout.phase not in (types.Phase.PROGRESSING, types.Phase.WAITING_PROMOTION):
            return _answer(types.StepDecision_Hold(f"nothing to do in phase {rollout.phase.name}"))
        if rollout.failed_checks >= max(analysis.threshold, 1):
            return _answer(types.StepDecision_Rollback(f"failed checks threshold reached {rollout.failed_checks}"))
        weight = rollout.canary_weight
        top = min(analysis.max_weight or 100, 100)
        step = max(analysis.step_weight or 20, 1)
        if weight == 0:
            first = min(step, top)
            return _answer(types.StepDecision_SetWeight(first), {"weight": first, "passes": 0})
        # The analysis of this interval is the last entry of the history (fledge judges before it steps).
        last = rollout.history[-1] if rollout.history else None
        passed = last is not None and last.weight == weight and last.verdict == types.Verdict.PASS
        before = json.loads(rollout.state) if rollout.state else {}
        if not passed:
            passes = 0
        elif before.get("weight") == weight:
            passes = before.get("passes", 0) + 1
        else:
            passes = 1
        here = {"weight": weight, "passes": passes}
        if passes < required:
            return _answer(types.StepDecision_Hold(f"{passes}/{required} passing analyses at {weight}%"), here)
        if weight >= top:
            return _answer(types.StepDecision_Promote(), here)
        nxt = min(weight + step, top)
        log.log(log.Level.INFO, f"{weight} -> {nxt}%")
        return _answer(types.StepDecision_SetWeight(nxt), {"weight": nxt, "passes": 0})
