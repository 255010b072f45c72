package main

import (
	"context"
	"io"
	"strings"
	"testing"
)

// TestRepairPartitionOutOfRange: a --partition that does not fit the
// API's 32-bit field is refused before anything is sent, instead of
// wrapping to another partition.
func TestRepairPartitionOutOfRange(t *testing.T) {
	for _, p := range []int{1 << 31, 1<<32 + 3, -2} {
		err := repairRun(context.Background(), nil, "", p, false, false, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "--partition") {
			t.Errorf("--partition %d: %v, want it refused naming the flag", p, err)
		}
	}
}
