package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/spf13/cobra"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"

	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/pki"
)

func newSecretCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "secret",
		Short: "Manage the cluster secret",
		Long: `Every node of a cluster shares a secret that authenticates the causal
contexts handed to clients. Create it once, copy the file to every node and
pass it with --cluster-secret-file (or cluster-secret-file: in the YAML file).`,
	}
	var force bool
	create := &cobra.Command{
		Use:   "create FILE",
		Short: "Write a new random cluster secret to FILE (mode 0600)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return createSecret(cmd, args[0], force)
		},
	}
	create.Flags().BoolVar(&force, "force", false, "overwrite FILE if it exists (nodes using the old secret will reject contexts signed with the new one)")
	var af adminFlags
	reload := &cobra.Command{
		Use:   "reload",
		Short: "Make nodes re-read their cluster secret file (rotation without a restart)",
		Long: `Each node given with --addr (comma-separated) re-reads its cluster secret file
and applies it at once: contexts are signed with the first secret and
verified with all of them, and the gossip keyring follows. To rotate: add the
new secret as the second line on every node and reload them all; move it to
the first line and reload them all; remove the old line and reload them all.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, addr := range strings.Split(af.addr, ",") {
				one := af
				one.addr = strings.TrimSpace(addr)
				err := withAdmin(cmd.Context(), &one, func(ctx context.Context, c adminv1.AdminClient) error {
					resp, err := c.ReloadSecrets(ctx, &adminv1.ReloadSecretsRequest{})
					if err != nil {
						return err
					}
					if af.json { // one line per node (JSON Lines), as each reloads
						return printJSONLine(cmd.OutOrStdout(), resp)
					}
					fmt.Fprintf(cmd.OutOrStdout(), "%s: %d secret(s) in use, the first signs\n", resp.Node, resp.Secrets)
					return nil
				})
				if err != nil {
					return fmt.Errorf("%s: %w (nodes before it already reloaded; fix it and run again)", one.addr, err)
				}
			}
			return nil
		},
	}
	af.bind(reload)
	var gforce bool
	gossipKey := &cobra.Command{
		Use:   "create-gossip-key FILE",
		Short: "Write a new random gossip encryption key to FILE (mode 0600), for --gossip-key-file",
		Long: `Gossip is encrypted with keys derived from the cluster secret unless a node
is given --gossip-key-file: one base64 key per line, the first encrypting and
every one decrypting. To rotate without a flap: add the new key as the second
line on every node and run 'meridian secret reload' on each; move it first and
reload each; remove the old line and reload each.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			key, err := node.GenerateGossipKey()
			if err != nil {
				return err
			}
			if err := writePrivate(args[0], key+"\n", gforce); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote a new gossip key to %s (mode 0600)\nnext: copy it to every node and start each node with --gossip-key-file %s\n", args[0], args[0])
			return nil
		},
	}
	gossipKey.Flags().BoolVar(&gforce, "force", false, "overwrite FILE if it exists")
	cmd.AddCommand(create, reload, gossipKey)
	return cmd
}

func createSecret(cmd *cobra.Command, path string, force bool) error {
	if err := writePrivate(path, node.GenerateSecret()+"\n", force); err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "wrote a new cluster secret to %s (mode 0600)\n", path)
	fmt.Fprintf(out, "next: copy it to every node (keep it private) and start each node with --cluster-secret-file %s\n", path)
	return nil
}

// writePrivate writes a secret file with mode 0600, refusing to overwrite
// one unless force. A forced one replaces the file whole (a new file,
// renamed over it): a crash leaves the old secret or the new one, and a
// reader that had the old file open (its mode may have been too open)
// never sees the new secret.
func writePrivate(path, content string, force bool) error {
	if force {
		return pki.WriteFileAtomic(path, []byte(content), 0o600)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s already exists: keep it (every node must share the same one), or pass --force to replace it", path)
	}
	if err != nil {
		return fmt.Errorf("create secret file: %w", err)
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(0o600); err != nil { // an overwritten file keeps its old mode otherwise
		f.Close()
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
