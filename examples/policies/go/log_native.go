//go:build !wasip1

package main

import "log"

// Log prints to stderr when the rule runs natively (go test); in the component it goes to fledge's log.
func Log(level Level, message string) {
	log.Printf("[%d] %s", level, message)
}
