package main

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/pki"
	"github.com/meridiankv/meridian/transport"
)

// clientSec is how a client command authenticates to a cluster: TLS with
// the cluster's CA (and a client certificate), and/or a bearer token.
// Without --ca it talks plaintext, to clusters started with --insecure.
type clientSec struct {
	ca, cert, key, token string
	// dialOpt, when set, replaces the flags (in-process local clusters).
	dialOpt grpc.DialOption
}

// bind adds --ca, --cert, --key and --token, defaulting to MERIDIAN_CA,
// MERIDIAN_CERT, MERIDIAN_KEY and MERIDIAN_TOKEN.
func (s *clientSec) bind(fs *pflag.FlagSet) {
	fs.StringVar(&s.ca, "ca", os.Getenv("MERIDIAN_CA"), "cluster CA certificate (env MERIDIAN_CA); without it, plaintext to an --insecure cluster")
	fs.StringVar(&s.cert, "cert", os.Getenv("MERIDIAN_CERT"), "client certificate (env MERIDIAN_CERT), from `meridian certs create-client`")
	fs.StringVar(&s.key, "key", os.Getenv("MERIDIAN_KEY"), "client certificate's key (env MERIDIAN_KEY)")
	fs.StringVar(&s.token, "token", os.Getenv("MERIDIAN_TOKEN"), "bearer token (env MERIDIAN_TOKEN)")
}

// fromCluster fills unset TLS files from a cluster.json.
func (s *clientSec) fromCluster(cf *node.ClusterFile) {
	if s.ca == "" && cf.CA != "" {
		s.ca, s.cert, s.key = cf.CA, cf.ClientCert, cf.ClientKey
	}
}

func (s clientSec) options() ([]grpc.DialOption, error) {
	opts := []grpc.DialOption{
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(transport.MaxMessageSize), grpc.MaxCallSendMsgSize(transport.MaxMessageSize)),
	}
	switch {
	case s.dialOpt != nil:
		opts = append(opts, s.dialOpt)
	case s.ca != "":
		if (s.cert == "") != (s.key == "") {
			return nil, fmt.Errorf("give both --cert and --key, or neither (and a --token)")
		}
		src, err := pki.NewSource(s.ca, s.cert, s.key, pki.SourceOptions{})
		if err != nil {
			return nil, fmt.Errorf("TLS files: %w", err)
		}
		opts = append(opts, grpc.WithTransportCredentials(pki.ClientCredentials(src, pki.ClientOptions{})))
	default:
		if s.token != "" {
			return nil, fmt.Errorf("--token without --ca would send the token in plaintext: give the cluster's --ca")
		}
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if s.token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(s.token)))
	}
	return opts, nil
}

// bearer sends a token as "authorization: Bearer …", over TLS only.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }
