package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meridiankv/meridian/membership"
)

// Keyspace DDL goes through the metadata log: one definition wins
// everywhere, whichever node is asked.

const metaKeyspacePrefix = "keyspace/"

// savedKeyspaces reads the keyspaces an older version of this node
// created at run time (they are proposed when the metadata log starts).
func (n *Node) savedKeyspaces() ([]membership.KeyspaceSpec, error) {
	var out []membership.KeyspaceSpec
	err := n.store.ScanMeta(metaKeyspacePrefix, func(name string, v []byte) error {
		var s membership.KeyspaceSpec
		if err := json.Unmarshal(v, &s); err != nil {
			return fmt.Errorf("saved keyspace %s: %w", name, err)
		}
		out = append(out, s)
		return nil
	})
	return out, err
}

// CreateKeyspace creates a keyspace through the metadata log. Creating an
// identical keyspace again is a no-op; a different one with the same name
// is refused with ALREADY_EXISTS.
func (n *Node) CreateKeyspace(ctx context.Context, spec membership.KeyspaceSpec) (*membership.Keyspace, error) {
	if _, err := n.Propose(ctx, membership.Command{Kind: membership.CmdKeyspaceCreate, Keyspace: &spec}); err != nil {
		return nil, err
	}
	ks, ok := n.Topology().Keyspaces[spec.Name]
	if !ok {
		return nil, status.Errorf(codes.Aborted, "keyspace %q was dropped again meanwhile", spec.Name)
	}
	n.log.Info("keyspace created", "keyspace", spec.Name, "replication", spec.Replication)
	return ks, nil
}

// AlterKeyspace changes a keyspace's limits at once, or its replication
// through a transition that moves data. It reports whether data moves.
func (n *Node) AlterKeyspace(ctx context.Context, spec membership.KeyspaceSpec) (*membership.Keyspace, bool, uint64, error) {
	epoch, err := n.Propose(ctx, membership.Command{Kind: membership.CmdKeyspaceAlter, Keyspace: &spec})
	if err != nil {
		return nil, false, 0, err
	}
	t := n.Topology()
	ks, ok := t.Keyspaces[spec.Name]
	if !ok {
		return nil, false, 0, status.Errorf(codes.Aborted, "keyspace %q was dropped meanwhile", spec.Name)
	}
	moves := t.Meta != nil && t.Meta.Transition != nil && t.Meta.Transition.NextKeyspaces[spec.Name].Name != ""
	return ks, moves, epoch, nil
}

// DropKeyspace removes a keyspace; every node deletes its data in the
// background.
func (n *Node) DropKeyspace(ctx context.Context, name string) (uint64, error) {
	c := membership.Command{Kind: membership.CmdKeyspaceDrop, Name: name}
	if ks, ok := n.Topology().Keyspace(name); ok && name != "" {
		c.StorageID = ks.ID // a retry after an ambiguous commit is a no-op
	}
	return n.Propose(ctx, c)
}

// Propose applies a metadata command through the metadata leader and
// waits until this node applied it. Refusals come back as gRPC statuses
// (ALREADY_EXISTS for a keyspace defined differently, FAILED_PRECONDITION
// for the rest); UNAVAILABLE when the log has no reachable leader.
func (n *Node) Propose(ctx context.Context, c membership.Command) (uint64, error) {
	if c.IsInit() {
		return 0, status.Error(codes.PermissionDenied, "the metadata is initialized by its first leader only")
	}
	return n.propose(ctx, c)
}

// MetaState is the agreed metadata this node routes by (nil before it
// has any). Shared: never modify it.
func (n *Node) MetaState() *membership.MetaState { return n.Topology().Meta }

// refusalStatus maps a refusal by the metadata state to a gRPC status.
func refusalStatus(err error) error {
	var inv *membership.InvalidError
	switch {
	case errors.As(err, &inv):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, membership.ErrKeyspaceExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, membership.ErrUnknownMember), errors.Is(err, membership.ErrUnknownKeyspace):
		return status.Error(codes.NotFound, err.Error())
	}
	return status.Error(codes.FailedPrecondition, err.Error())
}
