package pebble

import pebbledb "github.com/cockroachdb/pebble/v2"

// OpenNoCompactions is Open with Pebble's automatic compactions off, so a
// test knows which level its flushed tables are in.
func OpenNoCompactions(opts Options) (*Engine, error) {
	opts.noCompactions = true
	return Open(opts)
}

// OpenFormat is Open with the store kept at (or created in) format: an
// old store for an upgrade to start from.
func OpenFormat(opts Options, format pebbledb.FormatMajorVersion) (*Engine, error) {
	opts.format = format
	return Open(opts)
}

// Format is the store's on-disk format version (Pebble's format major
// version).
func (e *Engine) Format() pebbledb.FormatMajorVersion { return e.db.FormatMajorVersion() }
