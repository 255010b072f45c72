package bench

import (
	"math"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
)

// ZipfianConstant is YCSB's default skew.
const ZipfianConstant = 0.99

// Zipfian draws ranks 0..n-1 with P(i) ∝ 1/(i+1)^θ. Up to exactLimit
// items it samples exactly (inverse CDF over a precomputed cumulative
// table); beyond, it uses Gray et al.'s approximation as YCSB's
// ZipfianGenerator does, which over-weights ranks 2..10 by up to ~15%.
// It can grow (for "latest").
type Zipfian struct {
	items      uint64
	theta      float64
	alpha      float64
	zetan      float64
	zeta2theta float64
	eta        float64
	cdf        []float64 // cumulative unnormalized weights, when exact
}

// exactLimit is the largest item count sampled exactly (8 bytes each).
const exactLimit = 1 << 24

// NewZipfian prepares a generator over n items (n >= 1).
func NewZipfian(n uint64, theta float64) *Zipfian {
	z := &Zipfian{theta: theta, alpha: 1 / (1 - theta), zeta2theta: zeta(0, 2, theta, 0)}
	z.Grow(n)
	return z
}

func zeta(from, to uint64, theta, initial float64) float64 {
	sum := initial
	for i := from; i < to; i++ {
		sum += 1 / math.Pow(float64(i+1), theta)
	}
	return sum
}

func (z *Zipfian) recompute() {
	z.eta = (1 - math.Pow(2/float64(z.items), 1-z.theta)) / (1 - z.zeta2theta/z.zetan)
}

// Grow extends the item count to n, updating ζ incrementally.
func (z *Zipfian) Grow(n uint64) {
	if n <= z.items {
		return
	}
	if n <= exactLimit {
		for i := z.items; i < n; i++ {
			z.zetan += 1 / math.Pow(float64(i+1), z.theta)
			z.cdf = append(z.cdf, z.zetan)
		}
	} else {
		z.cdf = nil
		z.zetan = zeta(z.items, n, z.theta, z.zetan)
	}
	z.items = n
	z.recompute()
}

// Next draws a rank in [0, n).
func (z *Zipfian) Next(r *rand.Rand) uint64 {
	u := r.Float64()
	uz := u * z.zetan
	if z.cdf != nil {
		return uint64(sort.SearchFloat64s(z.cdf, uz))
	}
	if uz < 1 {
		return 0
	}
	if uz < 1+math.Pow(0.5, z.theta) {
		return 1
	}
	v := uint64(float64(z.items) * math.Pow(z.eta*u-z.eta+1, z.alpha))
	if v >= z.items {
		v = z.items - 1
	}
	return v
}

// P is the probability of rank i (0-based) under the formula.
func (z *Zipfian) P(i uint64) float64 { return 1 / math.Pow(float64(i+1), z.theta) / z.zetan }

// fnv64 is YCSB's FNV-1a 64-bit hash of a long, used to scramble ranks and
// to spread key names.
func fnv64(v uint64) uint64 {
	const offset, prime = 0xCBF29CE484222325, 1099511628211
	h := uint64(offset)
	for i := 0; i < 8; i++ {
		h ^= v & 0xff
		h *= prime
		v >>= 8
	}
	return h
}

// KeyChooser picks the record number of the next operation.
type KeyChooser interface {
	Next(r *rand.Rand) uint64
}

// Uniform picks uniformly among the records inserted so far.
type Uniform struct{ Count *atomic.Uint64 }

// Next draws a record number.
func (u Uniform) Next(r *rand.Rand) uint64 { return r.Uint64N(max(u.Count.Load(), 1)) }

// ScrambledZipfian spreads zipfian popularity over the key space, so the
// popular items are not clustered at the low record numbers: a zipfian rank
// over the records, mapped to a record by a fixed pseudo-random
// permutation of the record space. Every record has its rank, so every one
// is drawn with the formula's probability. (YCSB draws the rank from 10^10
// items with its approximation and FNV-hashes it into the records; hashing
// a rank drawn over the record count itself instead, as this did, is no
// permutation: about a third of the records were never drawn.)
type ScrambledZipfian struct {
	z     *Zipfian
	count uint64
	bits  uint
}

// NewScrambledZipfian draws among count records. Next only reads, so
// workers share one (its table holds 8 bytes per record).
func NewScrambledZipfian(count uint64) *ScrambledZipfian {
	count = max(count, 1)
	bits := uint(1)
	for uint64(1)<<bits < count {
		bits++
	}
	return &ScrambledZipfian{z: NewZipfian(count, ZipfianConstant), count: count, bits: bits}
}

// Next draws a record number.
func (s *ScrambledZipfian) Next(r *rand.Rand) uint64 { return permute(s.z.Next(r), s.count, s.bits) }

// permute maps x in [0, n) to [0, n), a bijection: a mixing permutation of
// [0, 2^bits) (2^bits >= n > 2^(bits-1)), repeated until the value falls
// in [0, n) (cycle-walking: at most a few rounds, two on average at worst).
func permute(x, n uint64, bits uint) uint64 {
	mask := uint64(1)<<bits - 1
	half := max(bits/2, 1)
	for {
		// xor-shift-right and multiplying by an odd number are each a
		// bijection modulo 2^bits.
		x ^= x >> half
		x = (x * 0x9E3779B97F4A7C15) & mask
		x ^= x >> half
		x = (x * 0xBF58476D1CE4E5B9) & mask
		x ^= x >> half
		if x < n {
			return x
		}
	}
}

// Latest favours the most recently inserted records (YCSB's
// SkewedLatestGenerator): record = newest - zipfian rank. It is safe for
// concurrent use: workers share one.
type Latest struct {
	count *atomic.Uint64
	mu    sync.RWMutex
	z     *Zipfian
}

// NewLatest tracks the insert counter count.
func NewLatest(count *atomic.Uint64) *Latest {
	return &Latest{count: count, z: NewZipfian(max(count.Load(), 1), ZipfianConstant)}
}

// Next draws a record number.
func (l *Latest) Next(r *rand.Rand) uint64 {
	n := max(l.count.Load(), 1)
	l.mu.RLock()
	grow := n > l.z.items
	l.mu.RUnlock()
	if grow {
		l.mu.Lock()
		l.z.Grow(n)
		l.mu.Unlock()
	}
	l.mu.RLock()
	rank := l.z.Next(r)
	l.mu.RUnlock()
	if rank >= n {
		rank = n - 1
	}
	return n - 1 - rank
}
