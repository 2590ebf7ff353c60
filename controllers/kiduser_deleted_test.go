package controllers

import (
	"testing"
	"time"
)

func TestDeletedUsersForgetAfterTheirMemory(t *testing.T) {
	var d deletedUsers
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	d.add("a", t0)
	d.add("b", t0.Add(30*time.Second))
	if !d.has("a", t0.Add(deletedMemory-time.Second)) || !d.has("b", t0.Add(deletedMemory-time.Second)) {
		t.Fatal("a user deleted within the memory is not remembered")
	}
	if d.has("c", t0) {
		t.Error("a user never deleted is remembered")
	}
	if d.has("a", t0.Add(deletedMemory+time.Second)) {
		t.Error("a user deleted longer ago than the memory is remembered")
	}
	if !d.has("b", t0.Add(deletedMemory+time.Second)) {
		t.Error("the younger user was forgotten with the older")
	}
	// What is forgotten is freed, whatever the number of deletes.
	for i := range 1000 {
		d.add("x", t0.Add(time.Duration(i)*time.Second))
	}
	if len(d.queue) > int(deletedMemory/time.Second)+1 || len(d.uids) != 1 {
		t.Errorf("memory holds %d entries for %d users", len(d.queue), len(d.uids))
	}
}
