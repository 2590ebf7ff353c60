// Package faults holds the fault tests of kid-operator (docs/design.md,
// "Failure modes"): each runs the manager as a user deploys it, as separate
// processes on one local control plane, sends k-ID-shaped traffic on k-ID's
// retry schedule while it injects a fault (a rolling restart, a killed
// leader, kills between writes, an API server hung for minutes, a long
// soak), and counts what was stored and what the KidActions' targets saw.
//
// The tests build with the tag "faults" and run with `make test-faults`
// (the soak: `make soak`); .ci/run runs both make test and make test-faults.
package faults
