package node

import (
	"fmt"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Bytes is a size in bytes in the configuration. In YAML it is a plain
// integer (1073741824) or a size with a unit (1GiB, 256MiB, 64KB), as the
// flags take it (ParseBytes).
type Bytes int64

// ParseBytes reads a size in bytes: a whole number, optionally followed by
// a unit: B, KiB, MiB, GiB, TiB (powers of 1024) or KB, MB, GB (of 1000).
func ParseBytes(s string) (int64, error) {
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}} {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size: want bytes such as 268435456, 256MiB or 1GiB", s)
	}
	return n * mult, nil
}

// BytesError is a YAML value that is not a size. Line and Column are the
// value's position in the document.
type BytesError struct {
	Line, Column int
	Value        string
	Scalar       bool
}

func (e *BytesError) Error() string {
	if !e.Scalar {
		return fmt.Sprintf("line %d: want a size in bytes such as 268435456, 256MiB or 1GiB, not a list or map", e.Line)
	}
	return fmt.Sprintf("line %d: %q is not a size: want bytes such as 268435456, 256MiB or 1GiB", e.Line, e.Value)
}

// UnmarshalYAML takes an integer (a negative one too, for Config.Validate
// to refuse by name) or a string such as "1GiB".
func (b *Bytes) UnmarshalYAML(v *yaml.Node) error {
	if v.Kind == yaml.ScalarNode {
		var n int64
		// Only an integer: yaml.v3 decodes a float into an int64 by
		// truncating it (0.5 would be 0, turning the guard or hints off).
		if v.ShortTag() == "!!int" && v.Decode(&n) == nil {
			*b = Bytes(n)
			return nil
		}
		if n, err := ParseBytes(v.Value); err == nil {
			*b = Bytes(n)
			return nil
		}
	}
	return &BytesError{Line: v.Line, Column: v.Column, Value: v.Value, Scalar: v.Kind == yaml.ScalarNode}
}
