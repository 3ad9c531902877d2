// A fledge step policy in JavaScript (world fledge:policy/step-policy, contract 0.2): traffic moves to the
// next weight only after two analyses in a row passed at the current one. The count lives in the policy's
// own `state`, which fledge keeps in the Canary's status between analysis intervals. Analysis and gates are
// fledge's built-in default's. Config (analysis.policy.config): {"passes": 2}.
//
// Build: jco componentize step.js -w wit -n step-policy --backend quickjs --backend-qjs-stub-wasi \
//          --backend-qjs-disable-async -o two-passes.wasm
// Test:  fledge policy test two-passes.wasm scenario.yaml

import { log } from 'fledge:policy/log@0.2.0';

function passesRequired(text) {
  let raw;
  try {
    raw = JSON.parse(text || '{}');
  } catch (e) {
    // A result's error is thrown as the variant: the host reads it as policy-error::invalid-config.
    throw { tag: 'invalid-config', val: `config is not JSON: ${e.message}` };
  }
  const passes = raw.passes ?? 2;
  if (!Number.isInteger(passes) || passes < 1 || passes > 10) {
    throw { tag: 'invalid-config', val: 'passes must be 1..=10' };
  }
  return passes;
}

// An undefined state keeps the one fledge has; a JSON text replaces it.
function answer(decision, memory) {
  return { decision, state: memory === undefined ? undefined : JSON.stringify(memory) };
}

export const step = {
  next(rollout) {
    const required = passesRequired(rollout.config);
    const analysis = rollout.analysis;
    if (analysis.iterations) {
      throw { tag: 'unsupported', val: 'blue/green and A/B (analysis.iterations) are not stepped by weight' };
    }
    if (rollout.phase === 'promoting') {
      return answer({ tag: 'promote' });
    }
    if (rollout.phase !== 'progressing' && rollout.phase !== 'waiting-promotion') {
      return answer({ tag: 'hold', val: `nothing to do in phase ${rollout.phase}` });
    }
    if (rollout.failedChecks >= Math.max(analysis.threshold, 1)) {
      return answer({ tag: 'rollback', val: `failed checks threshold reached ${rollout.failedChecks}` });
    }
    const weight = rollout.canaryWeight;
    const top = Math.min(analysis.maxWeight ?? 100, 100);
    const stepWeight = Math.max(analysis.stepWeight ?? 20, 1);
    if (weight === 0) {
      const first = Math.min(stepWeight, top);
      return answer({ tag: 'set-weight', val: first }, { weight: first, passes: 0 });
    }
    // The analysis of this interval is the last entry of the history (fledge judges before it steps).
    const last = rollout.history[rollout.history.length - 1];
    const passed = last !== undefined && last.weight === weight && last.verdict === 'pass';
    const before = rollout.state ? JSON.parse(rollout.state) : {};
    let passes = 0;
    if (passed) {
      passes = before.weight === weight ? (before.passes ?? 0) + 1 : 1;
    }
    const here = { weight, passes };
    if (passes < required) {
      return answer({ tag: 'hold', val: `${passes}/${required} passing analyses at ${weight}%` }, here);
    }
    if (weight >= top) {
      return answer({ tag: 'promote' }, here);
    }
    const next = Math.min(weight + stepWeight, top);
    log('info', `${weight} -> ${next}%`);
    return answer({ tag: 'set-weight', val: next }, { weight: next, passes: 0 });
  },
};
