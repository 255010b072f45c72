package replica

// The hint log (copies held for unreachable replicas) lives in package
// repair, on this store's engine. These are the key prefixes it owns, so
// that the store's key space is described in one package.
const (
	// HintPrefix starts every hint key:
	// 'h' | len(target) | target | keyspace ID | partition | user key.
	HintPrefix = prefixHint
	// HintQuarantinePrefix starts hints that did not decode, set aside:
	// 'q' followed by the hint key without its 'h'.
	HintQuarantinePrefix = 'q'
)
