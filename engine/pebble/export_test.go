package pebble

// OpenNoCompactions is Open with Pebble's automatic compactions off, so a
// test knows which level its flushed tables are in.
func OpenNoCompactions(opts Options) (*Engine, error) {
	opts.noCompactions = true
	return Open(opts)
}
