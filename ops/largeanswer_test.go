package ops_test

import (
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/transport"
)

// TestAdminAnswersPastMaxValueSize: an admin answer with an entry per
// partition (repair status of a 65,536-partition ring, about 2 MB) goes
// out whole from a node with a small max-value-size, whose client
// messages are bounded by it: admin answers are bounded by what the CLI
// takes, not by the largest value.
func TestAdminAnswersPastMaxValueSize(t *testing.T) {
	ctx, l := startAdminCluster(t, node.LocalSpec{NodesPerDC: 1, Partitions: 65536,
		Configure: func(c *node.Config) { c.MaxValueSize = 1024 }})
	admin := adminClient(t, l.Nodes()[0].AdminAddr(),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(transport.MaxMessageSize))) // as the CLI dials
	resp, err := admin.RepairStatus(ctx, &adminv1.RepairStatusRequest{})
	if err != nil {
		t.Fatalf("repair status of 65,536 partitions: %v", err)
	}
	if n, size := len(resp.GetPartitions()), proto.Size(resp); n != 65536 || size <= 1<<20+1024 {
		t.Fatalf("%d partitions in %d bytes; want all 65,536, past the %d-byte client message bound", n, size, 1<<20+1024)
	}
}
