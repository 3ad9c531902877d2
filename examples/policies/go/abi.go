//go:build wasip1

package main

// The component model's canonical ABI for the one export of world step-policy, written by hand: mainline Go
// compiles wasm with 64-bit pointers, so generated bindings (which assume 32-bit, as TinyGo has) would lay
// records out wrongly. Offsets follow wit/types.wit (fledge:policy@0.2.0); change them only with the contract.

import "unsafe"

// Memory the host asked for (arguments) and the answer's strings, kept reachable until the host read them.
var arena [][]byte
var answerStrings [][]byte

// The answer: result<step-answer, policy-error> is 28 bytes, 4-aligned.
var answer [7]uint32

//go:wasmexport cabi_realloc
func cabiRealloc(old, oldSize, align, newSize uint32) uint32 {
	buf := make([]byte, newSize+align)
	arena = append(arena, buf)
	at := uint32(uintptr(unsafe.Pointer(&buf[0])))
	at = (at + align - 1) &^ (align - 1)
	if old != 0 {
		copy(bytesAt(at, newSize), bytesAt(old, min(oldSize, newSize)))
	}
	return at
}

//go:wasmexport fledge:policy/step@0.2.0#next
func next(rollout uint32) uint32 {
	r := readRollout(rollout)
	arena = nil // everything the host wrote is copied into Go values now
	answerStrings = nil
	clear(answer[:])
	decision, err := Next(&r)
	if err != nil {
		putU8(0, 1)
		putU8(4, uint8(err.Kind))
		putString(8, err.Message)
	} else {
		putU8(4, uint8(decision.Decision.Kind))
		switch decision.Decision.Kind {
		case SetWeight:
			putU32(8, decision.Decision.Weight)
		case Hold, Rollback:
			putString(8, decision.Decision.Reason)
		}
		if decision.State != nil {
			putU8(16, 1)
			putString(20, *decision.State)
		}
	}
	return uint32(uintptr(unsafe.Pointer(&answer[0])))
}

//go:wasmimport fledge:policy/log@0.2.0 log
func hostLog(level uint32, message unsafe.Pointer, length uint32)

// Log sends a message to fledge's log, tagged with the canary being judged.
func Log(level Level, message string) {
	hostLog(uint32(level), unsafe.Pointer(unsafe.StringData(message)), uint32(len(message)))
}

// address turns an address the host gave (a 32-bit integer by the ABI) into a pointer. `go vet` calls this a
// possible misuse of unsafe.Pointer, which is the nature of the ABI: the memory is the host's argument.
func address(at uint32) unsafe.Pointer { return unsafe.Pointer(uintptr(at)) }

func bytesAt(at, n uint32) []byte {
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(address(at)), n)
}

func u8(at uint32) uint8    { return *(*uint8)(address(at)) }
func u32(at uint32) uint32  { return *(*uint32)(address(at)) }
func f64(at uint32) float64 { return *(*float64)(address(at)) }

// str copies a string (pointer, length) out of the host's memory.
func str(at uint32) string { return string(bytesAt(u32(at), u32(at+4))) }

// optU32 reads an option<u32>: a tag byte, the value at +4.
func optU32(at uint32) *uint32 {
	if u8(at) == 0 {
		return nil
	}
	v := u32(at + 4)
	return &v
}

func readRollout(at uint32) Rollout {
	r := Rollout{
		Name:              str(at),
		Namespace:         str(at + 8),
		Phase:             Phase(u8(at + 16)),
		CanaryWeight:      u32(at + 20),
		Iterations:        u32(at + 24),
		FailedChecks:      u32(at + 28),
		Analysis:          readSettings(at + 32),
		Config:            str(at + 84),
		IntervalsAtWeight: u32(at + 92),
		SecondsInPhase:    u32(at + 96),
		Revision:          str(at + 100),
	}
	if u8(at+108) != 0 {
		state := str(at + 112)
		r.State = &state
	}
	records, n := u32(at+120), u32(at+124)
	for i := range n {
		r.History = append(r.History, readRecord(records+24*i))
	}
	return r
}

// analysis-settings: 52 bytes, 4-aligned.
func readSettings(at uint32) AnalysisSettings {
	s := AnalysisSettings{
		IntervalSeconds:     u32(at),
		Threshold:           u32(at + 4),
		MaxWeight:           optU32(at + 8),
		StepWeight:          optU32(at + 16),
		StepWeightPromotion: optU32(at + 32),
		Iterations:          optU32(at + 40),
		HasMatch:            u8(at+48) != 0,
	}
	weights, n := u32(at+24), u32(at+28)
	for i := range n {
		s.StepWeights = append(s.StepWeights, u32(weights+4*i))
	}
	return s
}

// analysis-record: 24 bytes, 8-aligned (time is an f64).
func readRecord(at uint32) AnalysisRecord {
	rec := AnalysisRecord{Time: f64(at), Weight: u32(at + 8), Verdict: Verdict(u8(at + 12))}
	checks, n := u32(at+16), u32(at+20)
	for i := range n {
		c := checks + 32*i // check-value: 32 bytes, 8-aligned
		check := CheckValue{Name: str(c), Verdict: Verdict(u8(c + 24))}
		if u8(c+8) != 0 {
			v := f64(c + 16)
			check.Value = &v
		}
		rec.Checks = append(rec.Checks, check)
	}
	return rec
}

func putU8(offset uint32, v uint8) {
	*(*uint8)(unsafe.Add(unsafe.Pointer(&answer[0]), offset)) = v
}

func putU32(offset uint32, v uint32) { answer[offset/4] = v }

// putString stores a copy of s, kept until the next call, as (pointer, length) at offset.
func putString(offset uint32, s string) {
	buf := []byte(s)
	answerStrings = append(answerStrings, buf)
	if len(buf) > 0 {
		putU32(offset, uint32(uintptr(unsafe.Pointer(&buf[0]))))
	}
	putU32(offset+4, uint32(len(buf)))
}
