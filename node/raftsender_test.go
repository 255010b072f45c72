package node_test

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/pki"
)

// certStream dials metadata listeners with one node's certificate, for a
// Raft transport in a test.
type certStream struct {
	net.Listener
	cfg *tls.Config
}

func (s certStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	return tls.DialWithDialer(d, "tcp", string(addr), s.cfg)
}

// TestRaftRequestsCheckedAgainstCertificate: a member's node certificate
// (a follower's) sending the metadata log a heartbeat that names the leader as its
// sender, at a higher term, is refused: the receiver does not take up
// that term. (Raft believes the sender a request names; before, any
// member could pass for the leader or a voter.)
func TestRaftRequestsCheckedAgainstCertificate(t *testing.T) {
	l := startSecureCluster(t, node.LocalSpec{NodesPerDC: 3, Engine: "memory"})
	eventually(t, "a metadata leader", func() bool { return l.Nodes()[0].MetaLog().Leader() != "" })
	leader := l.Nodes()[0].MetaLog().Leader()
	var others []*node.Node // the forger, then the target
	for _, n := range l.Nodes() {
		if n.ID() != leader {
			others = append(others, n)
		}
	}
	forger, target := others[0].ID(), others[1]
	ca, _, _ := l.ClientTLS()
	cert, key := pki.NodeFiles(l.CertDir(), forger)
	src, err := pki.NewSource(ca, cert, key, pki.SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	trans := raft.NewNetworkTransport(certStream{Listener: lis, cfg: src.ClientConfigWith(pki.ClientOptions{ServerName: "127.0.0.1"})}, 1, 5*time.Second, io.Discard)
	defer trans.Close()

	send := func(as string) error {
		term := target.MetaLog().Stats().Term
		req := &raft.AppendEntriesRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(as), Addr: []byte(as)},
			//lint:ignore SA1019 the legacy sender field, which the guard checks too
			Term: term + 10, Leader: []byte(as),
		}
		var resp raft.AppendEntriesResponse
		return trans.AppendEntries(raft.ServerID(target.ID()), raft.ServerAddress(target.RaftAddr()), req, &resp)
	}
	before := target.MetaLog().Stats().Term
	if err := send(leader); err == nil {
		t.Fatalf("%s's certificate passed a heartbeat off as the leader %s's", forger, leader)
	}
	if term := target.MetaLog().Stats().Term; term >= before+10 {
		t.Fatalf("after the refused heartbeat: %s at term %d (was %d, the forged heartbeat's %d)", target.ID(), term, before, before+10)
	}
}
