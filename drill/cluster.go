package drill

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
	"github.com/meridiankv/meridian/client"
)

// TargetNode is one node of the cluster to drill.
type TargetNode struct {
	ID, DC   string
	GRPCAddr string
	// AdminAddr is the node's admin listener ("": ask the client listener
	// through Discovery.Info).
	AdminAddr string
}

// Target is the cluster to drill and how to connect to it.
type Target struct {
	// Name describes it in the report (a cluster file, "local ...").
	Name  string
	Nodes []TargetNode
	// DialOptions carry the transport credentials (and any per-RPC
	// token) of every connection.
	DialOptions []grpc.DialOption
}

// Connect opens admin connections to every node and a client per
// datacenter, and makes sure keyspace exists (created with replication
// min(rf, nodes of the DC) in every DC if it does not). close releases
// everything.
func Connect(ctx context.Context, t Target, keyspace string, rf int) (env Env, close func(), err error) {
	var conns []*grpc.ClientConn
	var clients []*client.Client
	close = func() {
		for _, c := range clients {
			c.Close()
		}
		for _, c := range conns {
			c.Close()
		}
	}
	defer func() {
		if err != nil {
			close()
		}
	}()
	if len(t.Nodes) == 0 {
		return Env{}, nil, errors.New("the cluster lists no node")
	}
	env = Env{Target: t.Name, Admin: map[string]adminv1.AdminClient{}, KV: map[string]KV{}}
	perDC := map[string]int{}
	for _, n := range t.Nodes {
		if n.DC == "" {
			return Env{}, nil, fmt.Errorf("node %s has no datacenter in the cluster description", n.ID)
		}
		env.Topology.Nodes = append(env.Topology.Nodes, Node{ID: n.ID, DC: n.DC})
		perDC[n.DC]++
		addr := n.AdminAddr
		if addr == "" {
			if addr, err = adminAddr(ctx, n.GRPCAddr, t.DialOptions); err != nil {
				return Env{}, nil, fmt.Errorf("node %s: %w", n.ID, err)
			}
		}
		cc, err := grpc.NewClient(addr, t.DialOptions...)
		if err != nil {
			return Env{}, nil, fmt.Errorf("node %s admin %s: %w", n.ID, addr, err)
		}
		conns = append(conns, cc)
		env.Admin[n.ID] = adminv1.NewAdminClient(cc)
	}

	if env.Topology.RF, err = ensureKeyspace(ctx, env, keyspace, rf, perDC); err != nil {
		return Env{}, nil, err
	}

	for _, dc := range env.Topology.DCs() {
		var seeds, rest []string
		for _, n := range t.Nodes {
			if n.DC == dc {
				seeds = append(seeds, n.GRPCAddr)
			} else {
				rest = append(rest, n.GRPCAddr)
			}
		}
		c, err := client.Dial(ctx, append(seeds, rest...), client.WithDialOptions(t.DialOptions...), client.LocalDC(dc),
			client.RefreshInterval(5*time.Second))
		if err != nil {
			return Env{}, nil, fmt.Errorf("connect a client in %s: %w", dc, err)
		}
		clients = append(clients, c)
		env.KV[dc] = ClientKV{Client: c, Keyspace: keyspace, DC: dc}
	}
	return env, close, nil
}

func adminAddr(ctx context.Context, grpcAddr string, opts []grpc.DialOption) (string, error) {
	cc, err := grpc.NewClient(grpcAddr, opts...)
	if err != nil {
		return "", err
	}
	defer cc.Close()
	ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	info, err := internalv1.NewDiscoveryClient(cc).Info(ictx, &internalv1.InfoRequest{})
	if status.Code(err) == codes.Unimplemented {
		return grpcAddr, nil // the address is the admin listener already
	}
	if err != nil {
		return "", fmt.Errorf("ask %s for its admin address: %w (is the node running?)", grpcAddr, err)
	}
	if info.GetAdminAddr() == "" {
		return grpcAddr, nil
	}
	return info.GetAdminAddr(), nil
}

// ensureKeyspace creates keyspace if it does not exist and returns its
// replication per DC.
func ensureKeyspace(ctx context.Context, env Env, keyspace string, rf int, perDC map[string]int) (map[string]int, error) {
	var last error
	for _, n := range env.Topology.Nodes {
		kctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		rep, err := keyspaceOn(kctx, env.Admin[n.ID], keyspace, rf, perDC)
		cancel()
		if err == nil {
			return rep, nil
		}
		if errors.As(err, new(errNotFit)) {
			return nil, err
		}
		last = fmt.Errorf("%s: %w", n.ID, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("keyspace %s: %w", keyspace, last)
}

func keyspaceOn(ctx context.Context, admin adminv1.AdminClient, keyspace string, rf int, perDC map[string]int) (map[string]int, error) {
	list, err := admin.ListKeyspaces(ctx, &adminv1.ListKeyspacesRequest{})
	if err != nil {
		return nil, err
	}
	for _, ks := range list.GetKeyspaces() {
		if ks.GetName() == keyspace {
			if err := fitForDrill(ks, perDC); err != nil {
				return nil, err
			}
			return replication(ks), nil
		}
	}
	want := &adminv1.Keyspace{Name: keyspace, Replication: map[string]uint32{}}
	for dc, n := range perDC {
		want.Replication[dc] = uint32(min(rf, n))
	}
	resp, err := admin.CreateKeyspace(ctx, &adminv1.CreateKeyspaceRequest{Keyspace: want})
	if status.Code(err) == codes.AlreadyExists {
		return keyspaceOn(ctx, admin, keyspace, rf, perDC)
	}
	if err != nil {
		return nil, fmt.Errorf("create it: %w", err)
	}
	return replication(resp.GetKeyspace()), nil
}

// fitForDrill refuses an existing keyspace the drill's checks would fail
// on for what it is, not for what the cluster did: last-writer-wins
// resolves the set workload's concurrent read-modify-writes by dropping
// all but one (acknowledged elements "lost" by design), and a DC with
// no replicas fails its clients' LOCAL_QUORUM for the whole drill.
func fitForDrill(ks *adminv1.Keyspace, perDC map[string]int) error {
	if c := ks.GetConflict(); c != "" && c != "siblings" {
		return errNotFit{fmt.Sprintf("keyspace %s resolves conflicts by %s: the drill's set workload needs siblings kept (concurrent adds from every DC must all survive); give --keyspace a new name and the drill creates one", ks.GetName(), c)}
	}
	var missing []string
	for dc := range perDC {
		if ks.GetReplication()[dc] == 0 {
			missing = append(missing, dc)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return errNotFit{fmt.Sprintf("keyspace %s has no replicas in %s, whose clients the drill runs at LOCAL_QUORUM: give --keyspace a new name and the drill creates one replicated in every DC", ks.GetName(), strings.Join(missing, ", "))}
	}
	return nil
}

// errNotFit is a keyspace the drill cannot use (asking another node
// would not change that).
type errNotFit struct{ msg string }

func (e errNotFit) Error() string { return e.msg }

func replication(ks *adminv1.Keyspace) map[string]int {
	out := map[string]int{}
	for dc, n := range ks.GetReplication() {
		out[dc] = int(n)
	}
	return out
}
