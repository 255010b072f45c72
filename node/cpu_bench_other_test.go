//go:build !unix

package node_test

import "testing"

// cpuMeter reports nothing where getrusage is not available.
type cpuMeter struct{}

func startCPU() cpuMeter { return cpuMeter{} }

func (cpuMeter) report(*testing.B) {}
