package node

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"runtime"
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

// exposedFile is a configured file holding a secret that group or others
// may read or write: its config key, path and mode.
type exposedFile struct {
	key, path string
	mode      os.FileMode
}

// exposedSecretFiles returns the configured files holding secrets (the
// cluster secrets, the gossip keys, the TLS key) whose mode lets group or
// others read or write them: the node still starts (a mounted secret
// volume often has mode 0644), but says so. Windows has no such modes.
func (c Config) exposedSecretFiles() []exposedFile {
	if runtime.GOOS == "windows" {
		return nil
	}
	var out []exposedFile
	for _, f := range []exposedFile{{key: "cluster-secret-file", path: c.ClusterSecretFile}, {key: "gossip-key-file", path: c.GossipKeyFile}, {key: "key", path: c.KeyFile}} {
		if f.path == "" {
			continue
		}
		if st, err := os.Stat(f.path); err == nil && st.Mode().Perm()&0o077 != 0 {
			f.mode = st.Mode().Perm()
			out = append(out, f)
		}
	}
	return out
}

// exposedDataDir reports whether the pebble data directory exists with a
// mode letting group or others in (one created by an older version, 0755,
// or by hand): the node starts, but says so. A new one is created 0700.
func (c Config) exposedDataDir() (os.FileMode, bool) {
	if runtime.GOOS == "windows" || c.Engine != "pebble" || c.DataDir == "" {
		return 0, false
	}
	st, err := os.Stat(c.DataDir)
	if err != nil || st.Mode().Perm()&0o077 == 0 {
		return 0, false
	}
	return st.Mode().Perm(), true
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

// LoadGossipKeys reads a gossip key file: one key per line, base64 of 16,
// 24 or 32 bytes (AES-128/192/256), the first encrypting and every one
// decrypting; blank lines and lines starting with # are ignored.
func LoadGossipKeys(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("gossip key file: %w", err)
	}
	var out [][]byte
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(line)
		if err != nil || (len(k) != 16 && len(k) != 24 && len(k) != 32) {
			return nil, fmt.Errorf("gossip key file %s line %d: want base64 of a 16, 24 or 32-byte key (create one with `meridian secret create-gossip-key FILE`)", path, i+1)
		}
		out = append(out, k)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("gossip key file %s holds no key", path)
	}
	return out, nil
}

// GenerateGossipKey returns a new random 32-byte gossip key, base64.
func GenerateGossipKey() (string, error) {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(k), nil
}

// gossipKeyring is the node's gossip keys: the key file's when one is
// configured, otherwise keys derived from the cluster secrets.
func (c Config) gossipKeyring(secrets [][]byte) ([][]byte, error) {
	if c.GossipKeyFile != "" {
		return LoadGossipKeys(c.GossipKeyFile)
	}
	return gossipKeys(secrets), nil
}

// ReloadSecrets re-reads the cluster secrets (ClusterSecrets and the
// ClusterSecretFile) and applies them without a restart: contexts are
// signed with the new first secret and verified with every listed one, and
// the gossip keyring follows. Rotate by adding the new secret as the second
// line on every node and reloading each, then moving it first and
// reloading each, then removing the old one and reloading each.
func (n *Node) ReloadSecrets() (int, error) {
	// Everything is read and checked before anything changes: a gossip key
	// file that does not load leaves the contexts' secrets as they were,
	// as the error says.
	secrets, err := n.cfg.secrets()
	if err != nil {
		return 0, err
	}
	keys, err := n.cfg.gossipKeyring(secrets)
	if err != nil {
		return 0, err
	}
	if err := n.coord.SetSecrets(secrets); err != nil {
		return 0, err
	}
	if err := n.gossip.RotateKeys(keys); err != nil {
		return 0, err
	}
	n.log.Info("cluster secrets reloaded", "secrets", len(secrets))
	return len(secrets), nil
}
