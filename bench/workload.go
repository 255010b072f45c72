package bench

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Op is an operation type.
type Op string

const (
	OpRead   Op = "read"
	OpUpdate Op = "update"
	OpInsert Op = "insert"
	OpRMW    Op = "rmw" // read-modify-write: Get, then Put with its context
)

// Ops lists the operation types in report order.
var Ops = []Op{OpRead, OpUpdate, OpInsert, OpRMW}

// Workload is an operation mix and a default key distribution.
type Workload struct {
	Name         string
	Mix          map[Op]float64 // proportions, summing to 1
	Distribution string         // zipfian, uniform or latest
}

// ErrScans is returned for YCSB workload E.
var ErrScans = errors.New("workload E needs range scans, which Meridian does not offer (keys are hashed across partitions): use A, B, C, D, F or a custom --mix")

// WorkloadByName returns a YCSB core workload: A (50/50 read/update), B
// (95/5), C (read only), D (95/5 read latest/insert), F (50/50 read/rmw).
func WorkloadByName(name string) (Workload, error) {
	switch strings.ToUpper(name) {
	case "A":
		return Workload{Name: "A", Mix: map[Op]float64{OpRead: 0.5, OpUpdate: 0.5}, Distribution: "zipfian"}, nil
	case "B":
		return Workload{Name: "B", Mix: map[Op]float64{OpRead: 0.95, OpUpdate: 0.05}, Distribution: "zipfian"}, nil
	case "C":
		return Workload{Name: "C", Mix: map[Op]float64{OpRead: 1}, Distribution: "zipfian"}, nil
	case "D":
		return Workload{Name: "D", Mix: map[Op]float64{OpRead: 0.95, OpInsert: 0.05}, Distribution: "latest"}, nil
	case "E":
		return Workload{}, ErrScans
	case "F":
		return Workload{Name: "F", Mix: map[Op]float64{OpRead: 0.5, OpRMW: 0.5}, Distribution: "zipfian"}, nil
	}
	return Workload{}, fmt.Errorf("workload %q: use A, B, C, D or F (YCSB core workloads), or --mix", name)
}

// ParseMix parses "read=70,update=20,insert=10,rmw=0" (percentages or
// fractions; normalized to sum to 1).
func ParseMix(s string) (Workload, error) {
	w := Workload{Name: "custom", Mix: map[Op]float64{}, Distribution: "zipfian"}
	total := 0.0
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		f, err := strconv.ParseFloat(v, 64)
		if !ok || err != nil || f < 0 {
			return Workload{}, fmt.Errorf("mix %q: want op=weight pairs such as read=70,update=30", s)
		}
		op := Op(strings.ToLower(k))
		switch op {
		case OpRead, OpUpdate, OpInsert, OpRMW:
		default:
			return Workload{}, fmt.Errorf("mix: unknown operation %q: use read, update, insert or rmw", k)
		}
		w.Mix[op] += f
		total += f
	}
	if total == 0 {
		return Workload{}, fmt.Errorf("mix %q has no operations", s)
	}
	for op := range w.Mix {
		w.Mix[op] /= total
	}
	w.Name = "custom(" + s + ")"
	return w, nil
}

// pick chooses an operation for a uniform draw u in [0, 1).
func (w Workload) pick(u float64) Op {
	acc := 0.0
	for _, op := range Ops {
		acc += w.Mix[op]
		if u < acc {
			return op
		}
	}
	for i := len(Ops) - 1; i >= 0; i-- {
		if w.Mix[Ops[i]] > 0 {
			return Ops[i]
		}
	}
	return OpRead
}

// KeyName is the key of record n: "user" + a fixed-width hash, as YCSB
// names keys when inserts are hashed.
func KeyName(n uint64) []byte {
	return fmt.Appendf(nil, "user%020d", fnv64(n))
}
