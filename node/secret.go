package node

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
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

// gossipKeys derives the gossip encryption keys from the cluster secrets,
// in the same order: one secret to manage, and rotating it rotates the
// gossip keyring the same way (every listed key decrypts, the first
// encrypts).
func gossipKeys(secrets [][]byte) [][]byte {
	out := make([][]byte, len(secrets))
	for i, s := range secrets {
		m := hmac.New(sha256.New, s)
		m.Write([]byte("meridian/gossip-key/v1"))
		out[i] = m.Sum(nil)
	}
	return out
}

// ReloadSecrets re-reads the cluster secrets (ClusterSecrets and the
// ClusterSecretFile) and applies them without a restart: contexts are
// signed with the new first secret and verified with every listed one, and
// the gossip keyring follows. Rotate by adding the new secret as the second
// line on every node and reloading each, then moving it first and
// reloading each, then removing the old one and reloading each.
func (n *Node) ReloadSecrets() (int, error) {
	secrets, err := n.cfg.secrets()
	if err != nil {
		return 0, err
	}
	if err := n.coord.SetSecrets(secrets); err != nil {
		return 0, err
	}
	if err := n.gossip.RotateKeys(gossipKeys(secrets)); err != nil {
		return 0, err
	}
	n.log.Info("cluster secrets reloaded", "secrets", len(secrets))
	return len(secrets), nil
}
