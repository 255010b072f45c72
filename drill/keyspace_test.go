package drill

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
)

// listOnly answers ListKeyspaces with one keyspace.
type listOnly struct {
	adminv1.AdminClient // not implemented: panics
	ks                  *adminv1.Keyspace
}

func (l listOnly) ListKeyspaces(context.Context, *adminv1.ListKeyspacesRequest, ...grpc.CallOption) (*adminv1.ListKeyspacesResponse, error) {
	return &adminv1.ListKeyspacesResponse{Keyspaces: []*adminv1.Keyspace{l.ks}}, nil
}

// TestExistingKeyspaceMustFitTheDrill: an existing keyspace that keeps
// last-writer-wins (the set workload's concurrent adds would be dropped
// by design) or has no replicas in a client DC (its LOCAL_QUORUM fails
// throughout) is refused, saying what to do, rather than failing the
// drill for what the keyspace is; a fit one is used as it is.
func TestExistingKeyspaceMustFitTheDrill(t *testing.T) {
	topo := topo3(1)
	perDC := map[string]int{"dc1": 1, "dc2": 1, "dc3": 1}
	all := map[string]uint32{"dc1": 1, "dc2": 1, "dc3": 1}
	for _, tc := range []struct {
		ks   *adminv1.Keyspace
		want string
	}{
		{&adminv1.Keyspace{Name: "drill", Conflict: "lww", Replication: all}, "resolves conflicts by lww"},
		{&adminv1.Keyspace{Name: "drill", Conflict: "siblings", Replication: map[string]uint32{"dc1": 1, "dc2": 1}}, "no replicas in dc3"},
		{&adminv1.Keyspace{Name: "drill", Conflict: "siblings", Replication: all}, ""},
	} {
		env := Env{Topology: topo, Admin: map[string]adminv1.AdminClient{}}
		for _, n := range topo.Nodes {
			env.Admin[n.ID] = listOnly{ks: tc.ks}
		}
		rep, err := ensureKeyspace(context.Background(), env, "drill", 1, perDC)
		if tc.want == "" {
			if err != nil || len(rep) != 3 {
				t.Errorf("a fit keyspace: %v, %v", rep, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "give --keyspace a new name") {
			t.Errorf("keyspace %v: %v, want it refused with %q", tc.ks, err, tc.want)
		}
	}
}
