package main

import "testing"

func u32p(v uint32) *uint32 { return &v }

func progressing(weight uint32, history ...AnalysisRecord) *Rollout {
	return &Rollout{
		Phase:        Progressing,
		CanaryWeight: weight,
		Config:       "{}",
		Analysis:     AnalysisSettings{Threshold: 2, StepWeight: u32p(20), MaxWeight: u32p(40)},
		History:      history,
	}
}

func TestTheSecondPassInARowStepsUp(t *testing.T) {
	state := `{"weight":20,"passes":1}`
	r := progressing(20, AnalysisRecord{Weight: 20, Verdict: Pass})
	r.State = &state
	answer, err := Next(r)
	if err != nil {
		t.Fatal(err.Message)
	}
	if answer.Decision.Kind != SetWeight || answer.Decision.Weight != 40 {
		t.Fatalf("want set-weight 40, got %+v", answer.Decision)
	}
	if *answer.State != `{"weight":40,"passes":0}` {
		t.Fatalf("state %s", *answer.State)
	}
}

func TestAFailureStartsTheCountAgain(t *testing.T) {
	state := `{"weight":20,"passes":1}`
	r := progressing(20, AnalysisRecord{Weight: 20, Verdict: Fail})
	r.State = &state
	answer, _ := Next(r)
	if answer.Decision.Kind != Hold || *answer.State != `{"weight":20,"passes":0}` {
		t.Fatalf("want hold with the count reset, got %+v %s", answer.Decision, *answer.State)
	}
}

func TestAConfigItDoesNotKnowIsRefused(t *testing.T) {
	r := progressing(20)
	r.Config = `{"passes": 11}`
	if _, err := Next(r); err == nil || err.Kind != InvalidConfig {
		t.Fatalf("want invalid-config, got %+v", err)
	}
	r.Config = `{"pases": 2}`
	if _, err := Next(r); err == nil || err.Kind != InvalidConfig {
		t.Fatalf("want invalid-config for an unknown key, got %+v", err)
	}
}
