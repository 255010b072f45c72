package main

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meridiankv/meridian/node"
)

// minTokenLen is the shortest token hash-token takes (create-token's
// have 43 characters, 256 random bits).
const minTokenLen = 16

func newAuthCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "auth",
		Short: "Make bearer tokens for the auth section of the node config",
	}
	create := &cobra.Command{
		Use:   "create-token NAME",
		Short: "Make a random token and print it with the config lines that grant it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b := make([]byte, 32)
			if _, err := rand.Read(b); err != nil {
				return err
			}
			tok := base64.RawURLEncoding.EncodeToString(b)
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "token (give it to the client; it is not stored anywhere): %s\n", tok)
			fmt.Fprintf(out, "add to every node's config under auth.principals, then restart the nodes:\n")
			fmt.Fprintf(out, "  - name: %s\n    token-sha256: %s\n    keyspaces: {\"*\": read}   # adjust: read, write or \"read,write\" per keyspace\n", args[0], node.HashToken(tok))
			return nil
		},
	}
	hash := &cobra.Command{
		Use:   "hash-token [TOKEN|-]",
		Short: "Print the token-sha256 of an existing token (- or nothing: read it from standard input)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tok := ""
			if len(args) == 1 && args[0] != "-" {
				tok = args[0]
			} else {
				line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
				if err != nil && line == "" {
					return fmt.Errorf("read the token from standard input: %w", err)
				}
				tok = strings.TrimRight(line, "\r\n")
			}
			if len(tok) < minTokenLen {
				// The config keeps an unsalted SHA-256 of it: only a long
				// random token resists guessing from the hash.
				return fmt.Errorf("the token has %d characters, fewer than %d: make a random one with `meridian auth create-token NAME`", len(tok), minTokenLen)
			}
			fmt.Fprintln(cmd.OutOrStdout(), node.HashToken(tok))
			return nil
		},
	}
	cmd.AddCommand(create, hash)
	return cmd
}
