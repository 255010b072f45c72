package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meridiankv/meridian/pki"
)

func newCertsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Create a development CA and node and client certificates",
		Long: `Nodes speak TLS: clients verify the node's certificate, and peers
authenticate each other with node certificates signed by the cluster's CA.
These commands make such a CA and certificates (ECDSA P-256) in one
directory. A node certificate names its node ID (URI SAN meridian://node/ID);
a client certificate its client name (meridian://client/NAME).

  meridian certs create-ca --dir certs
  meridian certs create-node n1 --dir certs --host n1.example.com --host 10.0.0.1
  meridian certs create-client alice --dir certs

Nodes re-read their certificate files when they change: replace them with
new ones and no restart is needed.`,
	}
	cmd.AddCommand(newCertsCreateCACmd(), newCertsCreateNodeCmd(), newCertsCreateClientCmd())
	return cmd
}

func newCertsCreateCACmd() *cobra.Command {
	var dir string
	var opts pki.CAOptions
	c := &cobra.Command{
		Use:   "create-ca",
		Short: "Write a new CA to DIR/ca.crt and DIR/ca.key",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := pki.CreateCA(dir, opts); err != nil {
				return err
			}
			crt, key := pki.CAFiles(dir)
			out := cmd.OutOrStdout()
			if err := describeCert(cmd, crt, "CA certificate"); err != nil {
				return err
			}
			fmt.Fprintf(out, "wrote %s (CA key, mode 0600: it signs certificates; keep it off the nodes)\n", key)
			fmt.Fprintf(out, "next: meridian certs create-node ID --dir %s for every node, and copy %s (not the key) to every node and client\n", dir, crt)
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "certs", "directory for the CA files (created if missing)")
	c.Flags().BoolVar(&opts.Force, "force", false, "replace an existing CA (certificates it signed stop being trusted)")
	c.Flags().DurationVar(&opts.Validity, "validity", pki.DefaultCAValidity, "how long the CA is valid")
	return c
}

func newCertsCreateNodeCmd() *cobra.Command {
	var dir string
	var hosts []string
	var opts pki.CertOptions
	c := &cobra.Command{
		Use:   "create-node ID",
		Short: "Write DIR/node.ID.crt and DIR/node.ID.key, signed by the CA in DIR",
		Long: `Write a certificate for node ID, good for serving and for dialling peers,
signed by the CA in DIR. --host names every DNS name and IP address the
node is reached at (default localhost, 127.0.0.1 and ::1).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if err := pki.CreateNode(dir, id, hosts, opts); err != nil {
				return err
			}
			ca, _ := pki.CAFiles(dir)
			crt, key := pki.NodeFiles(dir, id)
			if err := describeCert(cmd, crt, "node certificate"); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "wrote %s (node key, mode 0600)\n", key)
			fmt.Fprintf(out, "next: copy %s, %s and %s to node %s and start it with --ca %s --cert %s --key %s\n",
				ca, crt, key, id, ca, crt, key)
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "certs", "directory holding the CA; the certificate is written there")
	c.Flags().StringSliceVar(&hosts, "host", nil, "DNS name or IP address of the node (repeat or comma-separate; default localhost,127.0.0.1,::1)")
	c.Flags().BoolVar(&opts.Force, "force", false, "replace an existing certificate for this node")
	c.Flags().DurationVar(&opts.Validity, "validity", pki.DefaultCertValidity, "how long the certificate is valid (never past the CA's expiry)")
	return c
}

func newCertsCreateClientCmd() *cobra.Command {
	var dir string
	var opts pki.CertOptions
	c := &cobra.Command{
		Use:   "create-client NAME",
		Short: "Write DIR/client.NAME.crt and DIR/client.NAME.key, signed by the CA in DIR",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := pki.CreateClient(dir, name, opts); err != nil {
				return err
			}
			ca, _ := pki.CAFiles(dir)
			crt, key := pki.ClientFiles(dir, name)
			if err := describeCert(cmd, crt, "client certificate"); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "wrote %s (client key, mode 0600)\n", key)
			fmt.Fprintf(out, "next: give %s, %s and %s to client %s; it connects with --ca %s --cert %s --key %s\n",
				ca, crt, key, name, ca, crt, key)
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "certs", "directory holding the CA; the certificate is written there")
	c.Flags().BoolVar(&opts.Force, "force", false, "replace an existing certificate for this client")
	c.Flags().DurationVar(&opts.Validity, "validity", pki.DefaultCertValidity, "how long the certificate is valid (never past the CA's expiry)")
	return c
}

// describeCert prints the file just written with its identity and expiry.
func describeCert(cmd *cobra.Command, path, what string) error {
	cert, err := pki.ReadCertificateFile(path)
	if err != nil {
		return err
	}
	who := ""
	if id, ok := pki.NodeID(cert); ok {
		who = fmt.Sprintf(", node %s", id)
		hosts := append([]string(nil), cert.DNSNames...)
		for _, ip := range cert.IPAddresses {
			hosts = append(hosts, ip.String())
		}
		if len(hosts) > 0 {
			who += ", hosts " + strings.Join(hosts, " ")
		}
	} else if name, ok := pki.ClientName(cert); ok {
		who = ", client " + name
	}
	fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (%s%s, valid until %s)\n", path, what, who, cert.NotAfter.UTC().Format(time.DateOnly))
	return nil
}
