// Package kid is k-ID's wire format, shared by the receiver, the controllers
// and the simulator: the webhook signature, the event envelope and payloads,
// the identifiers each event type carries, and the removal of personal data.
//
// It makes no API calls and keeps no state, so every function here can be
// tested and fuzzed on its own.
package kid
