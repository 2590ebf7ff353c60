// Package receivermemory holds the test that the receiving tier's memory
// does not grow with the players of the cluster: a receiver-only manager,
// under the receiver's role, serves status streams while 20,000 KidUsers are
// created (docs/design.md, "Live status"). It runs on a control plane of its
// own, so that its players burden no other test's operator. It has no code
// of its own.
package receivermemory
