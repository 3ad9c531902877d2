// A fledge step policy in Go (world fledge:policy/step-policy, contract 0.2): traffic moves to the next
// weight only after two analyses in a row passed at the current one. The count lives in the policy's own
// state, which fledge keeps in the Canary's status between analysis intervals (and across controller
// restarts). Analysis and gates are fledge's built-in default's, so the Canary's metrics judge each interval.
// Config (analysis.policy.config): {"passes": 2}.
//
// This file is plain Go (go test runs it natively); abi.go binds it to the component's export. Edit Next.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Memory is what the policy remembers between intervals: the weight it counts at and the passes seen there.
type Memory struct {
	Weight uint32 `json:"weight"`
	Passes uint32 `json:"passes"`
}

type config struct {
	Passes *uint32 `json:"passes"`
}

func passesRequired(text string) (uint32, *PolicyError) {
	var c config
	decoder := json.NewDecoder(bytes.NewReader([]byte(text)))
	decoder.DisallowUnknownFields()
	if err := decoder.Decode(&c); err != nil {
		return 0, &PolicyError{Kind: InvalidConfig, Message: "config: " + err.Error()}
	}
	if c.Passes == nil {
		return 2, nil
	}
	if *c.Passes < 1 || *c.Passes > 10 {
		return 0, &PolicyError{Kind: InvalidConfig, Message: "passes must be 1..=10"}
	}
	return *c.Passes, nil
}

// keep answers decision and replaces fledge's state with memory.
func keep(decision StepDecision, memory Memory) StepAnswer {
	text, _ := json.Marshal(memory)
	state := string(text)
	return StepAnswer{Decision: decision, State: &state}
}

func orDefault(v *uint32, otherwise uint32) uint32 {
	if v == nil {
		return otherwise
	}
	return *v
}

// Next is the rule: at each weight, count the analyses that passed in a row (in state); step up after
// `passes` of them, promote once at maxWeight, roll back at the failed-check threshold.
func Next(r *Rollout) (StepAnswer, *PolicyError) {
	required, err := passesRequired(r.Config)
	if err != nil {
		return StepAnswer{}, err
	}
	a := r.Analysis
	if a.Iterations != nil && *a.Iterations > 0 {
		return StepAnswer{}, &PolicyError{
			Kind:    Unsupported,
			Message: "blue/green and A/B (analysis.iterations) are not stepped by weight",
		}
	}
	switch r.Phase {
	case Promoting:
		// fledge moves all traffic back to the primary; a nil state keeps what fledge has.
		return StepAnswer{Decision: StepDecision{Kind: Promote}}, nil
	case Progressing, WaitingPromotion:
	default:
		return StepAnswer{Decision: StepDecision{Kind: Hold, Reason: "nothing to do in phase " + r.Phase.String()}}, nil
	}
	if r.FailedChecks >= max(a.Threshold, 1) {
		why := fmt.Sprintf("failed checks threshold reached %d", r.FailedChecks)
		return StepAnswer{Decision: StepDecision{Kind: Rollback, Reason: why}}, nil
	}
	weight := r.CanaryWeight
	top := min(orDefault(a.MaxWeight, 100), 100)
	step := max(orDefault(a.StepWeight, 20), 1)
	if weight == 0 {
		first := min(step, top)
		return keep(StepDecision{Kind: SetWeight, Weight: first}, Memory{Weight: first}), nil
	}
	// The analysis of this interval is the last entry of the history (fledge judges before it steps).
	passed := false
	if n := len(r.History); n > 0 {
		last := r.History[n-1]
		passed = last.Weight == weight && last.Verdict == Pass
	}
	var before Memory
	if r.State != nil {
		_ = json.Unmarshal([]byte(*r.State), &before)
	}
	var passes uint32
	if passed {
		passes = 1
		if before.Weight == weight {
			passes = before.Passes + 1
		}
	}
	here := Memory{Weight: weight, Passes: passes}
	if passes < required {
		why := fmt.Sprintf("%d/%d passing analyses at %d%%", passes, required, weight)
		return keep(StepDecision{Kind: Hold, Reason: why}, here), nil
	}
	if weight >= top {
		return keep(StepDecision{Kind: Promote}, here), nil
	}
	next := min(weight+step, top)
	Log(Info, fmt.Sprintf("%d -> %d%%", weight, next))
	return keep(StepDecision{Kind: SetWeight, Weight: next}, Memory{Weight: next}), nil
}

func main() {}
