// A linear step policy for fledge, written in JavaScript (world fledge:policy/step-policy).
//
// Traffic to the canary grows by `step` percent each interval (default 10) up to the Canary's maxWeight,
// then the canary is promoted; failed checks at the threshold roll it back. Config
// (analysis.policy.config): {"step": 10}. Build and test: see README.md.

import { log } from 'fledge:policy/log@0.1.0';

function config(text) {
  let raw;
  try {
    raw = JSON.parse(text || '{}');
  } catch (e) {
    // A result's error is thrown as the variant: the host reads it as policy-error::invalid-config.
    throw { tag: 'invalid-config', val: `config is not JSON: ${e.message}` };
  }
  const step = raw.step ?? 10;
  if (!Number.isInteger(step) || step < 1 || step > 100) {
    throw { tag: 'invalid-config', val: 'step must be an integer 1..100' };
  }
  return { step };
}

export const step = {
  next(rollout) {
    const { step } = config(rollout.config);
    const analysis = rollout.analysis;
    if (rollout.phase === 'promoting') {
      return { tag: 'set-weight', val: 0 };
    }
    if (rollout.phase !== 'progressing' && rollout.phase !== 'waiting-promotion') {
      return { tag: 'hold', val: `nothing to do in phase ${rollout.phase}` };
    }
    if (rollout.failedChecks >= Math.max(analysis.threshold, 1)) {
      return { tag: 'rollback', val: `failed checks threshold reached ${rollout.failedChecks}` };
    }
    const maxWeight = Math.min(analysis.maxWeight ?? 100, 100);
    if (rollout.canaryWeight >= maxWeight) {
      return { tag: 'promote' };
    }
    const weight = Math.min(rollout.canaryWeight + step, maxWeight);
    log('info', `linear step: ${rollout.canaryWeight} -> ${weight}`);
    return { tag: 'set-weight', val: weight };
  },
};
