package node

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
)

// MinSecretLen is the shortest cluster secret accepted, in characters.
const MinSecretLen = 32

// GenerateSecret returns a new random cluster secret (64 hex characters),
// for `meridian secret create` and local clusters.
func GenerateSecret() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err)) // never happens on supported platforms
	}
	return hex.EncodeToString(b[:])
}

// ParseSecrets reads a cluster-secret file's content: one secret per line,
// blank lines and lines starting with '#' ignored. The first secret signs
// new contexts; every secret listed verifies them, so operators rotate by
// adding the new secret as a second line on every node, then moving it
// first, then removing the old one.
func ParseSecrets(content string) ([]string, error) {
	var out []string
	for i, line := range strings.Split(content, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if len(line) < MinSecretLen {
			return nil, fmt.Errorf("line %d: a cluster secret needs at least %d characters (generate one with `meridian secret create FILE`)", i+1, MinSecretLen)
		}
		out = append(out, line)
	}
	if len(out) == 0 {
		return nil, errors.New("no secret in the file: generate one with `meridian secret create FILE`")
	}
	return out, nil
}

// LoadSecrets reads and parses a cluster-secret file.
func LoadSecrets(path string) ([]string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cluster-secret-file: %w", err)
	}
	s, err := ParseSecrets(string(raw))
	if err != nil {
		return nil, fmt.Errorf("cluster-secret-file %s: %w", path, err)
	}
	return s, nil
}

// secrets returns the cluster secrets as keys: ClusterSecrets, then those
// of ClusterSecretFile.
func (c Config) secrets() ([][]byte, error) {
	all := append([]string(nil), c.ClusterSecrets...)
	if c.ClusterSecretFile != "" {
		more, err := LoadSecrets(c.ClusterSecretFile)
		if err != nil {
			return nil, err
		}
		all = append(all, more...)
	}
	out := make([][]byte, len(all))
	for i, s := range all {
		out[i] = []byte(s)
	}
	return out, nil
}
