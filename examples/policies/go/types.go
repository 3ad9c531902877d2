package main

// The contract's types (wit/types.wit, fledge:policy@0.2.0) as Go values. abi.go reads and writes them in
// the component model's memory layout.

// Phase is the Canary's phase, in the contract's order.
type Phase uint8

const (
	Initializing Phase = iota
	Initialized
	Waiting
	Progressing
	WaitingPromotion
	Promoting
	Finalising
	Succeeded
	Failed
	Terminating
	Terminated
)

var phaseNames = [...]string{
	"initializing", "initialized", "waiting", "progressing", "waiting-promotion", "promoting",
	"finalising", "succeeded", "failed", "terminating", "terminated",
}

func (p Phase) String() string {
	if int(p) < len(phaseNames) {
		return phaseNames[p]
	}
	return "unknown"
}

// Verdict is an analysis verdict.
type Verdict uint8

const (
	Pass Verdict = iota
	Fail
	Inconclusive
)

// AnalysisSettings are the Canary's analysis settings, defaults not yet applied (nil: not set).
type AnalysisSettings struct {
	IntervalSeconds     uint32
	Threshold           uint32
	MaxWeight           *uint32
	StepWeight          *uint32
	StepWeights         []uint32
	StepWeightPromotion *uint32
	Iterations          *uint32
	HasMatch            bool
}

// CheckValue is one check of a past analysis; Value is nil when the query returned nothing.
type CheckValue struct {
	Name    string
	Value   *float64
	Verdict Verdict
}

// AnalysisRecord is one past analysis of this rollout.
type AnalysisRecord struct {
	Time    float64
	Weight  uint32
	Verdict Verdict
	Checks  []CheckValue
}

// Rollout is one rollout at one analysis tick.
type Rollout struct {
	Name              string
	Namespace         string
	Phase             Phase
	CanaryWeight      uint32
	Iterations        uint32
	FailedChecks      uint32
	Analysis          AnalysisSettings
	Config            string
	IntervalsAtWeight uint32
	SecondsInPhase    uint32
	Revision          string
	State             *string
	History           []AnalysisRecord
}

// DecisionKind is the case of a step decision, in the contract's order.
type DecisionKind uint8

const (
	SetWeight DecisionKind = iota
	Iterate
	Hold
	Promote
	Rollback
)

// StepDecision: Weight goes with SetWeight, Reason with Hold and Rollback.
type StepDecision struct {
	Kind   DecisionKind
	Weight uint32
	Reason string
}

// StepAnswer is a decision and the policy's new state: nil keeps fledge's, a JSON text (≤ 4 KiB) replaces it.
type StepAnswer struct {
	Decision StepDecision
	State    *string
}

// ErrorKind is the case of a policy error, in the contract's order.
type ErrorKind uint8

const (
	InvalidConfig ErrorKind = iota
	Unsupported
	Internal
)

// PolicyError is what a policy answers instead of a decision.
type PolicyError struct {
	Kind    ErrorKind
	Message string
}

// Level is a log message's level, in the contract's order.
type Level uint32

const (
	Debug Level = iota
	Info
	Warn
	Error
)
