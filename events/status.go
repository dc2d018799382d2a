package events

import "slices"

// statuses are every status a task record can have, in life order.
var statuses = []string{StatusNew, StatusProcess, StatusSuccess, StatusError, StatusCancel, StatusRetry}

// Statuses returns every task status, in life order.
func Statuses() []string { return slices.Clone(statuses) }

// ValidStatus reports whether s is a task status.
func ValidStatus(s string) bool { return slices.Contains(statuses, s) }
